//! Reading a configuration file: TOML syntax, types, unknown keys, expansion, validation.
//!
//! [`load`] runs the whole pipeline and returns a [`LoadedConfig`]. The stages:
//!
//! 1. The text is parsed as TOML ([`toml::Table`]); syntax errors carry line and column.
//! 2. The required tables (`[offload]`, `[provider]`, `[framework]`, `[groups]`) must
//!    exist, and `provider.type` / `framework.type` must name a known variant.
//! 3. Knowing the variants, the text is deserialized again into the typed schema with
//!    spans, so a type error points at its line and column, and `serde_ignored` collects
//!    unknown keys in every table, including inside `[provider]` and `[framework]` (serde's
//!    internally tagged enums would drop them silently, so the variant is picked by hand
//!    and its struct deserialized directly; see [`Tagged`]).
//! 4. Every string value of the parsed table is expanded ([`super::expand`]) with its
//!    dotted field name for errors, and the expanded table is deserialized into
//!    [`Config`].
//! 5. [`super::validate`] checks the rules that span fields and fills derived values.
//!
//! Unknown keys and ignored legacy fields are warnings, never errors: they are logged and
//! kept in `LoadedConfig::warnings` for the tests to check.

use std::fmt::Write as _;
use std::marker::PhantomData;
use std::path::Path;

use anyhow::{Result, anyhow};
use indexmap::IndexMap;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, Visitor,
    value::MapAccessDeserializer,
};
use serde::{Deserialize, Deserializer};

use super::expand::{ExpandError, expand};
use super::kinds::{Described, Kind};
use super::schema::{
    CheckpointConfig, Config, FrameworkConfig, GroupConfig, HistoryConfig, OffloadConfig,
    ProviderConfig, ReportConfig, shown,
};
use crate::framework::{FrameworkInfo, FrameworkKind, FrameworkSection, FrameworkVisitor};
use crate::provider::{ProviderInfo, ProviderKind, ProviderSection, ProviderVisitor};

/// A configuration that passed every check, with where it came from.
#[derive(Debug, Clone)]
pub(crate) struct LoadedConfig {
    /// The file it was read from, as given on the command line.
    #[cfg(test)]
    path: std::path::PathBuf,
    /// The expanded, defaulted, validated configuration.
    pub(crate) config: Config,
    /// Soft problems (unknown keys, ignored legacy fields), already logged; sorted.
    #[cfg(test)]
    pub(crate) warnings: Vec<String>,
}

/// Reads, expands and validates the configuration file at `path`.
///
/// Errors name the file, and the line and column or the field at fault.
pub(crate) fn load(path: &Path) -> Result<LoadedConfig> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            anyhow::bail!(
                "config file `{}` not found (hint: run `offload init` to create one, or pass \
                 `-c PATH` to use another file)",
                path.display()
            )
        }
        Err(err) => anyhow::bail!("cannot read config file `{}`: {err}", path.display()),
    };
    load_str(&text, path)
}

/// Like [`load`], for text already read; `path` is used in messages only.
pub(crate) fn load_str(text: &str, path: &Path) -> Result<LoadedConfig> {
    load_str_with_env(text, path, &|name| std::env::var(name).ok())
}

/// Like [`load_str`], with the environment given as a lookup (`None`: unset).
pub(crate) fn load_str_with_env(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LoadedConfig> {
    let cx = LoadContext { text, path, env };
    let table: toml::Table = toml::from_str(text).map_err(|e| cx.toml_error(&e))?;
    require_tables(&table).map_err(|msg| cx.error(msg))?;
    let (provider, framework) = probe_kinds(&cx)?;
    let (mut config, mut warnings) = provider.visit(WithProvider {
        cx: &cx,
        table: &table,
        framework,
    })?;
    warnings.extend(no_effect_warnings(&config, &table));
    super::validate::validate(&mut config).map_err(|e| cx.error(format!("{e:#}")))?;
    warnings.sort();
    warnings.dedup();
    emit_warnings(path, &warnings);
    Ok(LoadedConfig {
        #[cfg(test)]
        path: path.to_owned(),
        config,
        #[cfg(test)]
        warnings,
    })
}

fn emit_warnings(path: &Path, warnings: &[String]) {
    for warning in warnings {
        tracing::warn!("config file `{}`: {warning}", path.display());
    }
}

/// What every stage needs to phrase its errors.
struct LoadContext<'a> {
    text: &'a str,
    path: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl LoadContext<'_> {
    /// An error about the file as a whole (or a field it names itself).
    fn error(&self, msg: impl std::fmt::Display) -> anyhow::Error {
        anyhow!("invalid config file `{}`: {msg}", self.path.display())
    }

    /// An error at a byte offset of the text: line, column and the line itself.
    fn error_at(&self, offset: usize, msg: impl std::fmt::Display) -> anyhow::Error {
        let offset = offset.min(self.text.len());
        let line_start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[offset..]
            .find('\n')
            .map_or(self.text.len(), |i| offset + i);
        let line_no = self.text[..offset].matches('\n').count() + 1;
        let column = self.text[line_start..offset].chars().count() + 1;
        let line_text = self.text[line_start..line_end].trim_end_matches('\r');
        let gutter = " ".repeat(line_no.to_string().len());
        let caret = " ".repeat(column - 1);
        anyhow!(
            "invalid config file `{}` at line {line_no}, column {column}: {msg}\n\
             {gutter} |\n{line_no} | {line_text}\n{gutter} | {caret}^",
            self.path.display()
        )
    }

    /// A TOML syntax or type error, with its position when the parser knows it.
    fn toml_error(&self, err: &toml::de::Error) -> anyhow::Error {
        let msg = friendly_message(err.message().trim_end());
        match err.span() {
            Some(span) => self.error_at(span.start, msg),
            None => self.error(msg),
        }
    }
}

/// Rewrites serde's Rust-flavoured type names into words a config author knows.
fn friendly_message(msg: &str) -> String {
    let mut msg = msg.to_owned();
    for (rust, words) in [
        ("expected usize", "expected a non-negative integer"),
        ("expected u64", "expected a non-negative integer"),
        ("expected u32", "expected a non-negative integer"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected `true` or `false`"),
    ] {
        msg = msg.replace(rust, words);
    }
    if let Some(start) = msg.find("expected struct ") {
        msg.replace_range(start.., "expected a table");
    }
    // `invalid type: string "<the value>", expected …` quotes the value whole.
    if let (Some(open), Some(close)) = (msg.find(" \""), msg.rfind("\", expected")) {
        if open + 2 <= close {
            let cut = shown(&msg[open + 2..close]).into_owned();
            msg.replace_range(open + 2..close, &cut);
        }
    }
    msg
}

/// The tables every config must have, each with a hint for when it is missing.
fn require_tables(table: &toml::Table) -> Result<(), String> {
    let required = [
        (
            "offload",
            "missing `[offload]` table (hint: add a line `[offload]`; it may stay empty to \
             use the defaults `max_parallel = 10` and `test_timeout_secs = 900`)",
        ),
        (
            "provider",
            "missing `[provider]` table (hint: add `[provider]` with `type = \"local\"` to run \
             tests as local processes; the other types are `default` and `modal`)",
        ),
        (
            "framework",
            "missing `[framework]` table (hint: add `[framework]` with `type = \"pytest\"`; \
             the other types are `cargo` (also spelled `nextest`) and `default`)",
        ),
        ("groups", MISSING_GROUPS),
    ];
    for (name, missing) in required {
        match table.get(name) {
            None => return Err(missing.to_owned()),
            Some(toml::Value::Table(_)) => {}
            Some(other) => {
                return Err(format!(
                    "`{name}` must be a table, written `[{name}]`, not {}",
                    with_article(other.type_str())
                ));
            }
        }
    }
    if let Some(toml::Value::Table(groups)) = table.get("groups") {
        for (name, group) in groups {
            if !group.is_table() {
                return Err(format!(
                    "`groups.{}` is {}, not a group table; each group is a table of its \
                     own, e.g. `[groups.all]` with `retry_count = 0` and `filters = \"\"`",
                    shown(&toml_key(name)),
                    with_article(group.type_str())
                ));
            }
        }
    }
    Ok(())
}

/// `an integer`, `a string`: a TOML type name with its article.
fn with_article(kind: &str) -> String {
    let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {kind}")
}

/// The message for a config without any group table.
const MISSING_GROUPS: &str = "missing `[groups.NAME]` table: define at least one test group, e.g.:\n\
     [groups.all]\n\
     retry_count = 0\n\
     filters = \"\"";

/// Reads `type` of `[provider]` and `[framework]` and returns their kinds.
fn probe_kinds(cx: &LoadContext<'_>) -> Result<(ProviderKind, FrameworkKind)> {
    #[derive(Deserialize)]
    struct Section {
        #[serde(rename = "type")]
        kind: Option<toml::Spanned<toml::Value>>,
    }
    #[derive(Deserialize)]
    struct Probe {
        provider: Section,
        framework: Section,
    }
    // A parse with spans, so a bad `type` can be shown where it is written.
    let probe: Probe = toml::from_str(cx.text).map_err(|e| cx.toml_error(&e))?;
    Ok((
        resolve_kind(cx, "provider", probe.provider.kind)?,
        resolve_kind(cx, "framework", probe.framework.kind)?,
    ))
}

/// The kind named by the `type` written in `[section]`.
fn resolve_kind<K: Kind>(
    cx: &LoadContext<'_>,
    section: &str,
    spanned: Option<toml::Spanned<toml::Value>>,
) -> Result<K> {
    let Some(spanned) = spanned else {
        return Err(cx.error(format!(
            "`[{section}]` has no `type`; set it to one of {}",
            K::listing()
        )));
    };
    let offset = spanned.span().start;
    let Some(written) = spanned.get_ref().as_str() else {
        return Err(cx.error_at(
            offset,
            format!(
                "`type` in `[{section}]` must be a string, one of {}",
                K::listing()
            ),
        ));
    };
    if let Some(kind) = K::named(written) {
        return Ok(kind);
    }
    let all: Vec<&str> = K::all()
        .iter()
        .flat_map(|k| std::iter::once(k.name()).chain(k.aliases().iter().copied()))
        .collect();
    let suggestion = closest(written, &all)
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default();
    Err(cx.error_at(
        offset,
        format!(
            "unknown {section} type `{written}`; expected one of {}{suggestion}",
            K::listing()
        ),
    ))
}

/// The file as written, with `[provider]` and `[framework]` already resolved to `P`, `F`.
#[derive(Deserialize)]
struct RawConfig<P, F> {
    offload: OffloadConfig,
    provider: Tagged<P>,
    framework: Tagged<F>,
    groups: IndexMap<String, GroupConfig>,
    #[serde(default)]
    report: ReportConfig,
    #[serde(default)]
    checkpoint: Option<CheckpointConfig>,
    #[serde(default)]
    history: HistoryConfig,
}

impl<P: Into<ProviderConfig>, F: Into<FrameworkConfig>> RawConfig<P, F> {
    fn into_config(self) -> Config {
        Config {
            offload: self.offload,
            provider: self.provider.0.into(),
            framework: self.framework.0.into(),
            groups: self.groups,
            report: self.report,
            checkpoint: self.checkpoint,
            history: self.history,
        }
    }
}

/// Parses with the section type of the provider kind (then of the framework kind).
struct WithProvider<'a, 'b> {
    cx: &'a LoadContext<'b>,
    table: &'a toml::Table,
    framework: FrameworkKind,
}

impl ProviderVisitor for WithProvider<'_, '_> {
    type Output = Result<(Config, Vec<String>)>;
    fn visit<P>(self) -> Self::Output
    where
        P: ProviderSection + Described<Info = ProviderInfo> + Into<ProviderConfig>,
    {
        self.framework.visit(WithFramework::<P> {
            cx: self.cx,
            table: self.table,
            provider: PhantomData,
        })
    }
}

/// Parses with the provider section type `P` and the section type of the framework kind.
struct WithFramework<'a, 'b, P> {
    cx: &'a LoadContext<'b>,
    table: &'a toml::Table,
    provider: PhantomData<P>,
}

impl<P: DeserializeOwned + Into<ProviderConfig>> FrameworkVisitor for WithFramework<'_, '_, P> {
    type Output = Result<(Config, Vec<String>)>;
    fn visit<F>(self) -> Self::Output
    where
        F: FrameworkSection + Described<Info = FrameworkInfo> + Into<FrameworkConfig>,
    {
        parse_typed::<P, F>(self.cx, self.table)
    }
}

/// Stages 3 and 4 for one provider and framework variant.
fn parse_typed<P, F>(cx: &LoadContext<'_>, table: &toml::Table) -> Result<(Config, Vec<String>)>
where
    P: DeserializeOwned + Into<ProviderConfig>,
    F: DeserializeOwned + Into<FrameworkConfig>,
{
    let mut unknown = Vec::new();
    let deserializer = toml::Deserializer::new(cx.text);
    let typed: Result<RawConfig<P, F>, _> = serde_ignored::deserialize(deserializer, |path| {
        unknown.push(segments(&path));
    });
    let mut warnings: Vec<String> = unknown
        .iter()
        .filter_map(|path| unknown_key_warning::<P, F>(path))
        .collect();
    if let Err(err) = typed {
        // A misspelt key often explains the error (`creat_command` and then a missing
        // `create_command`), so the unknown keys seen so far are shown with it.
        warnings.sort();
        emit_warnings(cx.path, &warnings);
        return Err(cx.toml_error(&err));
    }

    let mut expanded = table.clone();
    let mut path = Vec::new();
    for (key, value) in expanded.iter_mut() {
        path.push(Segment::Key(key.clone()));
        expand_value(value, &mut path, cx.env).map_err(|msg| cx.error(msg))?;
        path.pop();
    }
    let raw = RawConfig::<P, F>::deserialize(toml::Value::Table(expanded)).map_err(|e| {
        // Expansion only rewrites the text of strings, so the shape checked above holds;
        // this is reached only if an expanded value is rejected by its type.
        cx.error(format!(
            "after environment expansion: {}",
            e.to_string().trim_end()
        ))
    })?;
    Ok((raw.into_config(), warnings))
}

/// A variant struct of an internally tagged table: the `type` key is skipped (it was
/// read already) and every other key goes to `T`'s own deserializer, so unknown keys
/// reach `serde_ignored` and errors keep their spans.
struct Tagged<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Tagged<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TaggedVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for TaggedVisitor<T> {
            type Value = Tagged<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(WithoutType(map))).map(Tagged)
            }
        }
        deserializer.deserialize_map(TaggedVisitor(PhantomData))
    }
}

/// A map access that hides the `type` key.
struct WithoutType<A>(A);

impl<'de, A: MapAccess<'de>> MapAccess<'de> for WithoutType<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        loop {
            let Some(key) = self.0.next_key::<String>()? else {
                return Ok(None);
            };
            if key == "type" {
                // Read as a string (not ignored) so `serde_ignored` does not report it.
                self.0.next_value::<String>()?;
                continue;
            }
            return seed.deserialize(key.into_deserializer()).map(Some);
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.next_value_seed(seed)
    }
}

/// One step of a path into the config: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

fn segments(path: &serde_ignored::Path<'_>) -> Vec<Segment> {
    use serde_ignored::Path;
    let mut out = match path {
        Path::Root => return Vec::new(),
        Path::Seq { parent, .. }
        | Path::Map { parent, .. }
        | Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => segments(parent),
    };
    match path {
        Path::Seq { index, .. } => out.push(Segment::Index(*index)),
        Path::Map { key, .. } => out.push(Segment::Key(key.clone())),
        _ => {}
    }
    out
}

/// `provider.env.API_TOKEN`, `framework.paths[0]`, `groups."my group".filters`.
fn dotted(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&toml_key(key));
            }
            Segment::Index(index) => {
                let _ = write!(out, "[{index}]");
            }
        }
    }
    out
}

/// A key as TOML would need it written: bare when it can be, quoted otherwise.
fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

/// The warning for an unknown key at `path`, with the closest valid key when there is one.
fn unknown_key_warning<P, F>(path: &[Segment]) -> Option<String>
where
    P: DeserializeOwned,
    F: DeserializeOwned,
{
    let (Segment::Key(key), table) = path.split_last()? else {
        return None;
    };
    let table_keys: Vec<&str> = table
        .iter()
        .map(|s| match s {
            Segment::Key(k) => k.as_str(),
            Segment::Index(_) => "",
        })
        .collect();
    let valid: &[&str] = match table_keys.as_slice() {
        [] => field_names::<RawConfig<P, F>>(),
        ["offload"] => field_names::<OffloadConfig>(),
        ["provider"] => field_names::<P>(),
        ["framework"] => field_names::<F>(),
        ["groups", _] => field_names::<GroupConfig>(),
        ["report"] => field_names::<ReportConfig>(),
        ["checkpoint"] => field_names::<CheckpointConfig>(),
        ["history"] => field_names::<HistoryConfig>(),
        _ => &[],
    };
    let suggestion = closest(key, valid)
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default();
    let location = if table.is_empty() {
        "at the top level".to_owned()
    } else {
        format!("in `[{}]`", dotted(table))
    };
    Some(format!(
        "unknown key `{}` {location}{suggestion}",
        toml_key(key)
    ))
}

/// The valid key closest to `word`, if it is close enough to be a likely typo.
fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(word, c), *c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// The field names a derived `Deserialize` struct accepts (what it passes to
/// `deserialize_struct`), so suggestions never drift from the schema.
fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Catcher<'a>(&'a mut &'static [&'static str]);

    impl<'de> Deserializer<'de> for Catcher<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("fields caught"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
            enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    // The error is the point: the catcher stops the deserializer once it named its fields.
    let _ = T::deserialize(Catcher(&mut fields));
    fields
}

/// Expands every string under `value` in place; `path` names the value for errors.
fn expand_value(
    value: &mut toml::Value,
    path: &mut Vec<Segment>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), String> {
    match value {
        toml::Value::String(text) => {
            *text = expand(text, env).map_err(|err| expand_message(&err, &dotted(path)))?;
        }
        toml::Value::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                path.push(Segment::Index(index));
                expand_value(item, path, env)?;
                path.pop();
            }
        }
        toml::Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                path.push(Segment::Key(key.clone()));
                expand_value(item, path, env)?;
                path.pop();
            }
        }
        toml::Value::Integer(_)
        | toml::Value::Float(_)
        | toml::Value::Boolean(_)
        | toml::Value::Datetime(_) => {}
    }
    Ok(())
}

fn expand_message(err: &ExpandError, field: &str) -> String {
    match err {
        ExpandError::Missing { name } => format!(
            "environment variable `{name}` is not set (used in `{field}`); set it or write \
             `${{{name}:-default}}`"
        ),
        other => format!("{other} in `{field}` (write `$$` for a literal `$`)"),
    }
}

/// Warnings for accepted fields that have no effect in this set-up, each naming the field
/// and why. `table` is the file as written, to tell a field written from its default.
fn no_effect_warnings(config: &Config, table: &toml::Table) -> Vec<String> {
    let written = |section: &str, key: &str| table.get(section).and_then(|t| t.get(key)).is_some();
    let mut out = provider_no_effect(&config.provider, written);
    out.extend(ignored_keys(written));
    out.extend(
        config
            .framework
            .section()
            .no_effect(&|key| written("framework", key)),
    );
    out
}

/// Fields that the provider makes moot: image set-up without an image, a local
/// `working_dir` for a remote provider, and what the provider names itself.
fn provider_no_effect(
    provider: &ProviderConfig,
    written: impl Fn(&str, &str) -> bool,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(why) = provider.section().no_image() {
        for key in ["sandbox_init_cmd", "post_patch_cmd"] {
            if written("offload", key) {
                out.push(format!("`{key}` in `[offload]` has no effect: {why}"));
            }
        }
    }
    out.extend(provider.section().no_effect());
    if !provider.is_local() && written("offload", "working_dir") {
        out.push(
            "`working_dir` in `[offload]` has no effect with a remote provider: tests run in \
             `sandbox_project_root` inside the sandbox"
                .to_owned(),
        );
    }
    out
}

/// Fields and sections accepted for compatibility that Offload ignores in every set-up.
fn ignored_keys(written: impl Fn(&str, &str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    if written("offload", "impatiently_requeue_batches") {
        out.push(
            "`impatiently_requeue_batches` in `[offload]` is ignored: Offload never runs \
             speculative duplicates of a batch (failed tests are retried after `retry_count`)"
                .to_owned(),
        );
    }
    for key in ["download_globs", "download_globs_failure_only"] {
        if written("report", key) {
            out.push(format!(
                "`{key}` in `[report]` is ignored: Offload fetches only the JUnit result files \
                 from sandboxes"
            ));
        }
    }
    if written("history", "reservoir_size") {
        out.push(
            "`reservoir_size` in `[history]` is ignored: the history keeps one smoothed \
             duration per test"
                .to_owned(),
        );
    }
    if written("history", "default_duration_secs") {
        out.push(
            "`default_duration_secs` in `[history]` is ignored: a test of unknown duration \
             counts as its group's mean"
                .to_owned(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    const MINIMAL: &str = r#"
[offload]

[provider]
type = "local"

[framework]
type = "pytest"

[groups.all]
"#;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn test_env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cret".to_owned()),
            "ROOT" => Some("/srv/app".to_owned()),
            _ => None,
        }
    }

    fn load_ok(text: &str) -> LoadedConfig {
        match load_str_with_env(text, Path::new("offload.toml"), &test_env) {
            Ok(loaded) => loaded,
            Err(err) => panic!("expected {text:?} to load, got: {err:#}"),
        }
    }

    fn load_err(text: &str) -> String {
        match load_str_with_env(text, Path::new("offload.toml"), &test_env) {
            Ok(loaded) => panic!("expected an error for {text:?}, got {:?}", loaded.config),
            Err(err) => format!("{err:#}"),
        }
    }

    #[test]
    fn defaults_of_a_minimal_config() {
        let c = load_ok(MINIMAL).config;
        assert_eq!(c.offload.max_parallel, 10);
        assert_eq!(c.offload.test_timeout_secs, 900);
        assert_eq!(c.offload.working_dir, None);
        assert_eq!(c.offload.sandbox_project_root, None);
        assert_eq!(c.offload.sandbox_repo_root, None);
        assert_eq!(c.offload.sandbox_init_cmd, None);
        assert_eq!(c.offload.max_parallel_collection, 0);
        let ProviderConfig::Local(local) = &c.provider else {
            panic!("expected local, got {:?}", c.provider)
        };
        assert_eq!(local.shell, "/bin/sh");
        assert_eq!(local.working_dir, None);
        assert!(local.env.is_empty());
        let FrameworkConfig::Pytest(pytest) = &c.framework else {
            panic!("expected pytest")
        };
        assert_eq!(pytest.paths, vec![PathBuf::from("tests")]);
        assert_eq!(pytest.python, "python");
        assert_eq!(pytest.command, None);
        let group = &c.groups["all"];
        assert_eq!(group.retry_count, 0);
        assert_eq!(group.filters, "");
        assert!(!group.schedule_individual);
        assert_eq!(c.report.output_dir, PathBuf::from("test-results"));
        assert!(c.report.junit);
        assert_eq!(c.report.junit_file, "junit.xml");
        assert!(c.report.download_globs.is_empty());
        assert!(c.checkpoint.is_none());
        assert_eq!(c.history.path, PathBuf::from(".offload/durations"));
        assert_eq!(c.history.record_history, crate::config::RecordHistory::Flag);
    }

    #[test]
    fn defaults_of_an_empty_report_and_history() {
        let c = load_ok(&format!("{MINIMAL}\n[report]\n\n[history]\n")).config;
        assert_eq!(
            c.report.junit_path(),
            PathBuf::from("test-results/junit.xml")
        );
        let history = c.history;
        assert_eq!(history.record_history, crate::config::RecordHistory::Flag);
        assert_eq!(history.path, PathBuf::from(".offload/durations"));
        assert_eq!(history.reservoir_size, 20);
        assert_eq!(history.default_duration_secs, 1.0);
    }

    #[test]
    fn defaults_of_remote_providers() {
        let c = load_ok(
            r#"
[offload]
sandbox_project_root = "/app"
[provider]
type = "default"
create_command = "mk"
exec_command = "run {sandbox_id} {command}"
destroy_command = "rm {sandbox_id}"
[framework]
type = "cargo"
[groups.all]
"#,
        )
        .config;
        let ProviderConfig::Default(p) = &c.provider else {
            panic!("expected default")
        };
        assert_eq!(p.timeout_secs, 3600);
        assert_eq!(p.cpu_cores, 1.0);
        assert!(p.copy_dirs.is_empty());
        assert_eq!(p.prepare_command, None);
        assert_eq!(p.download_command, None);
        let FrameworkConfig::Cargo(cargo) = &c.framework else {
            panic!("expected cargo")
        };
        assert!(!cargo.include_ignored);
        assert!(cargo.features.is_empty());

        let c = load_ok(
            r#"
[offload]
sandbox_repo_root = "/app"
[provider]
type = "modal"
[framework]
type = "pytest"
[groups.all]
"#,
        )
        .config;
        let ProviderConfig::Modal(m) = &c.provider else {
            panic!("expected modal")
        };
        assert_eq!(m.cpu_cores, 0.125);
        assert!(!m.include_cwd);
        assert_eq!(m.dockerfile, None);
        assert_eq!(m.memory_gb, None);
        assert!(m.experimental_options.is_empty());
    }

    #[test]
    fn framework_types_and_aliases() {
        let cases = [
            ("pytest", "pytest"),
            ("cargo", "cargo"),
            ("nextest", "cargo"),
        ];
        for (written, canonical) in cases {
            let text = MINIMAL.replace("type = \"pytest\"", &format!("type = \"{written}\""));
            assert_eq!(load_ok(&text).config.framework.type_name(), canonical);
        }
        let text = MINIMAL.replace(
            "type = \"pytest\"",
            "type = \"default\"\ndiscover_command = \"ls {filters}\"\nrun_command = \"t {tests}\"\ntest_id_format = \"{name}\"",
        );
        assert_eq!(load_ok(&text).config.framework.type_name(), "default");
    }

    #[test]
    fn type_may_come_after_other_keys() {
        let text = MINIMAL.replace(
            "[provider]\ntype = \"local\"",
            "[provider]\nshell = \"/bin/bash\"\ntype = \"local\"",
        );
        let c = load_ok(&text).config;
        let ProviderConfig::Local(local) = c.provider else {
            panic!("expected local")
        };
        assert_eq!(local.shell, "/bin/bash");
    }

    #[test]
    fn the_seed_examples_load() {
        let local_cargo = r#"
[offload]
max_parallel = 4
test_timeout_secs = 300
sandbox_project_root = "."

[provider]
type = "local"
working_dir = "."

[framework]
type = "cargo"

[groups.all]
retry_count = 0

[report]
output_dir = "test-results"
"#;
        let c = load_ok(local_cargo).config;
        assert_eq!(c.offload.max_parallel, 4);
        assert_eq!(c.offload.sandbox_project_root.as_deref(), Some("."));

        let pytest_default = r#"
[offload]
max_parallel = 40
test_timeout_secs = 60
sandbox_project_root = "/code/mng"
sandbox_init_cmd = "git apply /offload-upload/patch --allow-empty && uv sync --all-packages"

[provider]
type = "default"
prepare_command = "uv run @modal_sandbox.py prepare --include-cwd --cached libs/mng/imbue/mng/resources/Dockerfile"
create_command = "uv run @modal_sandbox.py create {image_id}"
exec_command = "uv run @modal_sandbox.py exec {sandbox_id} {command}"
destroy_command = "uv run @modal_sandbox.py destroy {sandbox_id}"
download_command = "uv run @modal_sandbox.py download {sandbox_id} {paths}"
timeout_secs = 600

[framework]
type = "pytest"
paths = ["libs/mng/tests"]
command = "uv run pytest"

[groups.unit]
retry_count = 0
filters = "-m 'not acceptance and not release'"

[report]
output_dir = "test-results"
junit = true
junit_file = "junit.xml"
"#;
        let loaded = load_ok(pytest_default);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let c = loaded.config;
        // The repo root is filled from the project root for remote providers.
        assert_eq!(c.offload.sandbox_repo_root.as_deref(), Some("/code/mng"));
        assert_eq!(
            c.groups["unit"].filters,
            "-m 'not acceptance and not release'"
        );

        let cargo_modal = r#"
[offload]
max_parallel = 4
test_timeout_secs = 600
sandbox_project_root = "/app"

[provider]
type = "modal"
dockerfile = ".devcontainer/Dockerfile"
include_cwd = true

[framework]
type = "cargo"

[groups.all]
retry_count = 1

[report]
output_dir = "test-results"
"#;
        let c = load_ok(cargo_modal).config;
        assert_eq!(c.provider.type_name(), "modal");
    }

    #[test]
    fn groups_keep_file_order() {
        let text = format!(
            "{}\n[groups.zeta]\n[groups.alpha]\n[groups.mid]\n",
            MINIMAL.replace("[groups.all]\n", "")
        );
        let c = load_ok(&text).config;
        let names: Vec<&str> = c.groups.keys().map(String::as_str).collect();
        assert_eq!(names, ["zeta", "alpha", "mid"]);
    }

    #[test]
    fn structural_errors() {
        let without = |table: &str| -> String {
            // Drop the table header and its `type` line, if any.
            let mut out = String::new();
            let mut skipping = false;
            for line in MINIMAL.lines() {
                if line.starts_with('[') {
                    skipping = line == table;
                }
                if !skipping {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            out
        };
        let cases: &[(String, &str)] = &[
            (
                without("[offload]"),
                "missing `[offload]` table (hint: add a line `[offload]`",
            ),
            (
                without("[provider]"),
                "missing `[provider]` table (hint: add `[provider]` with `type = \"local\"`",
            ),
            (
                without("[framework]"),
                "missing `[framework]` table (hint: add `[framework]` with `type = \"pytest\"`",
            ),
            (
                without("[groups.all]"),
                "missing `[groups.NAME]` table: define at least one test group, e.g.:\n[groups.all]\nretry_count = 0\nfilters = \"\"",
            ),
            (
                format!("offload = 3\n{}", without("[offload]")),
                "`offload` must be a table, written `[offload]`, not an integer",
            ),
            (
                MINIMAL.replace("[groups.all]", "[groups]\nretry_count = 1"),
                "`groups.retry_count` is an integer, not a group table",
            ),
            (
                MINIMAL.replace("type = \"local\"", ""),
                "invalid config file `offload.toml`: `[provider]` has no `type`; set it to one of `local`, `default`, `modal`",
            ),
            (
                MINIMAL.replace("type = \"pytest\"", ""),
                "`[framework]` has no `type`; set it to one of `pytest`, `cargo` (also spelled `nextest`), `default`",
            ),
            (
                MINIMAL.replace("type = \"local\"", "type = \"lcoal\""),
                "at line 5, column 8: unknown provider type `lcoal`; expected one of `local`, `default`, `modal` (did you mean `local`?)",
            ),
            (
                MINIMAL.replace("type = \"local\"", "type = \"docker\""),
                "unknown provider type `docker`; expected one of `local`, `default`, `modal`\n",
            ),
            (
                MINIMAL.replace("type = \"pytest\"", "type = \"vitest\""),
                "at line 8, column 8: unknown framework type `vitest`; expected one of `pytest`, `cargo` (also spelled `nextest`), `default`",
            ),
            (
                MINIMAL.replace("type = \"local\"", "type = 3"),
                "at line 5, column 8: `type` in `[provider]` must be a string",
            ),
        ];
        for (text, want) in cases {
            let err = load_err(text);
            assert!(
                err.contains(want),
                "for {text:?}\nwant: {want}\ngot:  {err}"
            );
        }
    }

    #[test]
    fn syntax_and_type_errors_show_line_and_column() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "[offload]",
                "[offload]\nmax_parallel = ",
                "invalid config file `offload.toml` at line 3, column 16: ",
            ),
            ("[offload]", "[offload", "at line 2, column 9: "),
            (
                "[offload]",
                "[offload]\nmax_parallel = \"many\"",
                "at line 3, column 16: invalid type: string \"many\", expected a non-negative integer",
            ),
            (
                "[offload]",
                "[offload]\nmax_parallel = -1",
                "at line 3, column 16: invalid value: integer `-1`, expected a non-negative integer",
            ),
            (
                "[groups.all]",
                "[groups.all]\nretry_count = \"2\"",
                "at line 11, column 15: invalid type: string \"2\", expected",
            ),
            (
                "[groups.all]",
                "[groups.all]\nschedule_individual = 1",
                "invalid type: integer `1`, expected `true` or `false`",
            ),
            (
                "type = \"local\"",
                "type = \"local\"\nshell = 3",
                "at line 6, column 9: invalid type: integer `3`, expected a string",
            ),
            (
                "type = \"local\"",
                "shell = 3\ntype = \"local\"",
                "at line 5, column 9: invalid type: integer `3`, expected a string",
            ),
            (
                "type = \"pytest\"",
                "type = \"pytest\"\npaths = \"tests\"",
                "at line 9, column 9: invalid type: string \"tests\", expected a sequence",
            ),
            (
                "type = \"local\"",
                "type = \"default\"",
                "missing field `create_command`",
            ),
            (
                "[groups.all]",
                "[groups.all]\n[history]\nrecord_history = \"sometimes\"",
                "unknown variant `sometimes`, expected `always` or `flag`",
            ),
        ];
        for (from, to, want) in cases {
            assert!(MINIMAL.contains(from), "{from:?}");
            let text = MINIMAL.replacen(from, to, 1);
            let err = load_err(&text);
            assert!(
                err.contains(want),
                "for {text:?}\nwant: {want}\ngot:  {err}"
            );
        }
    }

    #[test]
    fn a_position_error_quotes_the_line() {
        let err = load_err(&MINIMAL.replace("[offload]", "[offload]\nmax_parallel = \"x\""));
        assert!(
            err.ends_with("  |\n3 | max_parallel = \"x\"\n  |                ^"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_warn_with_suggestions() {
        let text = r#"
bogus = 1
[weird]
x = 1
[offload]
max_paralel = 4
stream_output = true
[provider]
type = "local"
shelll = "/bin/sh"
[provider.env]
ANY_KEY = "is fine"
[framework]
type = "pytest"
extra_arg = "-x"
[groups.unit]
retry_cont = 2
[groups."two words"]
filter = "-k x"
[report]
outdir = "x"
[checkpoint]
build_input = ["a"]
[history]
pth = "h.jsonl"
"#;
        // `[checkpoint]` with local is an error, so check it with the default provider.
        let text = text.replace(
            "type = \"local\"\nshelll = \"/bin/sh\"",
            "type = \"default\"\ncreate_command = \"c\"\nexec_command = \"e {command}\"\ndestroy_command = \"d\"\nshelll = \"/bin/sh\"",
        );
        let text = text.replace(
            "[checkpoint]\nbuild_input = [\"a\"]",
            "[checkpoint]\nbuild_inputs = [\"a\"]\nbuild_input = [\"a\"]",
        );
        let text = text.replace(
            "[offload]\n",
            "[offload]\nsandbox_project_root = \"/app\"\n",
        );
        let loaded = load_ok(&text);
        let want = [
            "unknown key `bogus` at the top level",
            "unknown key `build_input` in `[checkpoint]` (did you mean `build_inputs`?)",
            "unknown key `extra_arg` in `[framework]` (did you mean `extra_args`?)",
            "unknown key `filter` in `[groups.\"two words\"]` (did you mean `filters`?)",
            "unknown key `max_paralel` in `[offload]` (did you mean `max_parallel`?)",
            "unknown key `outdir` in `[report]` (did you mean `output_dir`?)",
            "unknown key `pth` in `[history]` (did you mean `path`?)",
            "unknown key `retry_cont` in `[groups.unit]` (did you mean `retry_count`?)",
            "unknown key `shelll` in `[provider]`",
            "unknown key `stream_output` in `[offload]`",
            "unknown key `weird` at the top level",
        ];
        assert_eq!(loaded.warnings, want);
    }

    #[test]
    fn unknown_provider_keys_suggest_from_the_variant() {
        let text = MINIMAL.replace("type = \"local\"", "type = \"local\"\nshelll = \"sh\"");
        assert_eq!(
            load_ok(&text).warnings,
            ["unknown key `shelll` in `[provider]` (did you mean `shell`?)"]
        );
    }

    #[test]
    fn free_form_tables_are_not_checked() {
        let text = r#"
[offload]
sandbox_project_root = "/app"
[provider]
type = "modal"
[provider.env]
ANYTHING = "${TOKEN}"
[provider.experimental_options]
enable_docker = true
nested = { any_key = "${TOKEN}", list = ["${TOKEN:-x}"] }
[framework]
type = "pytest"
[groups.all]
"#;
        let loaded = load_ok(text);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let ProviderConfig::Modal(modal) = &loaded.config.provider else {
            panic!("expected modal")
        };
        assert_eq!(modal.env["ANYTHING"], "s3cret");
        let nested = &modal.experimental_options["nested"];
        assert_eq!(nested["any_key"].as_str(), Some("s3cret"));
        assert_eq!(nested["list"][0].as_str(), Some("s3cret"));
    }

    #[test]
    fn fields_without_effect_warn_naming_the_field_and_why() {
        let warnings = |text: &str| load_ok(text).warnings;
        let local = "[offload]\nsandbox_init_cmd = \"make\"\npost_patch_cmd = \"make\"\n\
                     impatiently_requeue_batches = true\n\
                     [provider]\ntype = \"local\"\n[framework]\ntype = \"pytest\"\n\
                     test_id_format = \"{name}\"\n[groups.all]\n\
                     [report]\ndownload_globs = [\"*.log\"]\n\
                     [history]\nreservoir_size = 5\ndefault_duration_secs = 2.0\n";
        let got = warnings(local);
        for (field, why) in [
            (
                "`sandbox_init_cmd` in `[offload]`",
                "the local provider builds no image",
            ),
            (
                "`post_patch_cmd` in `[offload]`",
                "the local provider builds no image",
            ),
            (
                "`impatiently_requeue_batches` in `[offload]`",
                "speculative duplicates",
            ),
            (
                "`download_globs` in `[report]`",
                "only the JUnit result files",
            ),
            ("`reservoir_size` in `[history]`", "one smoothed duration"),
            ("`default_duration_secs` in `[history]`", "group's mean"),
            (
                "`test_id_format` in `[framework]`",
                "node IDs pytest prints",
            ),
        ] {
            assert!(
                got.iter().any(|w| w.starts_with(field) && w.contains(why)),
                "no warning for {field} in {got:?}"
            );
        }
        assert_eq!(got.len(), 7, "{got:?}");

        let remote = "[offload]\nworking_dir = \"x\"\nsandbox_project_root = \"/app\"\n\
                      sandbox_init_cmd = \"make\"\n\
                      [provider]\ntype = \"default\"\ncreate_command = \"c\"\n\
                      exec_command = \"e {command}\"\ndestroy_command = \"d\"\n\
                      copy_dirs = [\"a:b\"]\n\
                      [framework]\ntype = \"cargo\"\ntest_id_format = \"{name}\"\n[groups.all]\n";
        let got = warnings(remote);
        for (field, why) in [
            ("`working_dir` in `[offload]`", "remote provider"),
            (
                "`sandbox_init_cmd` in `[offload]`",
                "without a `prepare_command`",
            ),
            ("`copy_dirs` in `[provider]`", "without a `prepare_command`"),
            ("`test_id_format` in `[framework]`", "nextest lists them"),
        ] {
            assert!(
                got.iter().any(|w| w.starts_with(field) && w.contains(why)),
                "no warning for {field} in {got:?}"
            );
        }
        assert_eq!(got.len(), 4, "{got:?}");

        // With an image built, the image fields take effect.
        let built = remote.replace("create_command", "prepare_command = \"p\"\ncreate_command");
        assert_eq!(warnings(&built).len(), 2, "{:?}", warnings(&built));
    }

    #[test]
    fn legacy_pytest_fields_warn() {
        let text = MINIMAL.replace(
            "type = \"pytest\"",
            "type = \"pytest\"\nmarkers = \"not slow\"",
        );
        let warnings = load_ok(&text).warnings;
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with(
                "`markers` in `[framework]` is ignored; select tests with the `filters` of a group"
            ),
            "{warnings:?}"
        );
        let text = MINIMAL.replace(
            "type = \"pytest\"",
            "type = \"pytest\"\ncommand = \"uv run pytest\"\npython = \"python3\"\nextra_args = [\"-x\"]",
        );
        assert_eq!(
            load_ok(&text).warnings,
            [
                "`extra_args` in `[framework]` is ignored because `command` is set; put everything in `command`",
                "`python` in `[framework]` is ignored because `command` is set; put everything in `command`",
            ]
        );
        // Without `command` the legacy fields are used, so they do not warn.
        let text = MINIMAL.replace(
            "type = \"pytest\"",
            "type = \"pytest\"\npython = \"python3\"",
        );
        assert!(load_ok(&text).warnings.is_empty());
    }

    #[test]
    fn every_string_is_expanded() {
        let text = r#"
[offload]
sandbox_project_root = "${ROOT}"
sandbox_init_cmd = "echo $$HOME ${UNSET:-dflt} $HOME"
[provider]
type = "default"
create_command = "mk ${TOKEN}"
exec_command = "x {sandbox_id} {command}"
destroy_command = "rm {sandbox_id}"
copy_dirs = ["${ROOT}/data:/data"]
[provider.env]
API_TOKEN = "${TOKEN}"
"${KEY_NOT_EXPANDED}" = "v"
[framework]
type = "pytest"
paths = ["${ROOT}/tests", "plain"]
command = "${PY:-python} -m pytest"
[groups.all]
filters = "-k ${TOKEN}"
[report]
output_dir = "${OUT:-results}"
"#;
        let c = load_ok(text).config;
        assert_eq!(c.offload.sandbox_project_root.as_deref(), Some("/srv/app"));
        assert_eq!(
            c.offload.sandbox_init_cmd.as_deref(),
            Some("echo $HOME dflt $HOME")
        );
        let ProviderConfig::Default(p) = &c.provider else {
            panic!("expected default")
        };
        assert_eq!(p.create_command, "mk s3cret");
        assert_eq!(p.copy_dirs, ["/srv/app/data:/data"]);
        assert_eq!(p.env["API_TOKEN"], "s3cret");
        assert_eq!(p.env["${KEY_NOT_EXPANDED}"], "v");
        let FrameworkConfig::Pytest(pytest) = &c.framework else {
            panic!("expected pytest")
        };
        assert_eq!(
            pytest.paths,
            [PathBuf::from("/srv/app/tests"), PathBuf::from("plain")]
        );
        assert_eq!(pytest.command.as_deref(), Some("python -m pytest"));
        assert_eq!(c.groups["all"].filters, "-k s3cret");
        assert_eq!(c.report.output_dir, PathBuf::from("results"));
    }

    #[test]
    fn expansion_errors_name_variable_and_field() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "[provider.env]\n",
                "[provider.env]\nAPI_TOKEN = \"${NOPE}\"\n",
                "invalid config file `offload.toml`: environment variable `NOPE` is not set (used in `provider.env.API_TOKEN`); set it or write `${NOPE:-default}`",
            ),
            (
                "[framework]\n",
                "[framework]\npaths = [\"a\", \"${NOPE}\"]\n",
                "environment variable `NOPE` is not set (used in `framework.paths[1]`)",
            ),
            (
                "[groups.all]\n",
                "[groups.\"my group\"]\nfilters = \"${}\"\n",
                "empty variable name in `${}` in `groups.\"my group\".filters` (write `$$` for a literal `$`)",
            ),
            (
                "[offload]\n",
                "[offload]\nsandbox_init_cmd = \"x ${OPEN\"\n",
                "unclosed variable reference `${OPEN` (missing `}`) in `offload.sandbox_init_cmd`",
            ),
        ];
        let base = "[offload]\n[provider]\ntype = \"local\"\n[provider.env]\n[framework]\ntype = \"pytest\"\n[groups.all]\n";
        for (from, to, want) in cases {
            let text = base.replace(from, to);
            let err = load_err(&text);
            assert!(
                err.contains(want),
                "for {text:?}\nwant: {want}\ngot:  {err}"
            );
        }
    }

    #[test]
    fn expansion_uses_the_injected_environment_only() {
        let text = MINIMAL.replace("[offload]", "[offload]\nsandbox_init_cmd = \"${TOKEN}\"");
        let err = load_str_with_env(&text, Path::new("o.toml"), &no_env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`TOKEN` is not set"), "{err}");
    }

    #[test]
    fn missing_file_hints_at_init() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.toml");
        let err = load(&path).unwrap_err().to_string();
        assert!(
            err.contains(&format!("config file `{}` not found", path.display())),
            "{err}"
        );
        assert!(err.contains("`offload init`"), "{err}");
    }

    #[test]
    fn type_errors_cut_long_values() {
        let long = "v".repeat(10_000);
        let text = MINIMAL.replace(
            "[offload]",
            &format!("[offload]\nmax_parallel = \"{long}\""),
        );
        let err = load_err(&text);
        assert!(err.contains("invalid type: string \"vvv"), "{err}");
        assert!(err.contains("… (10000 bytes in all)\", expected"), "{err}");
        assert!(err.len() < 1_000 + 10_000, "{} bytes", err.len());
    }

    #[test]
    fn load_reads_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offload.toml");
        std::fs::write(&path, MINIMAL).unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.path, path);
        assert_eq!(loaded.config.groups.len(), 1);
    }

    #[test]
    fn field_names_follow_the_schema() {
        assert!(field_names::<GroupConfig>().contains(&"retry_count"));
        use crate::framework::PytestConfig;
        use crate::provider::LocalProviderConfig;
        assert!(field_names::<LocalProviderConfig>().contains(&"shell"));
        assert!(!field_names::<LocalProviderConfig>().contains(&"type"));
        assert_eq!(
            field_names::<RawConfig<LocalProviderConfig, PytestConfig>>(),
            [
                "offload",
                "provider",
                "framework",
                "groups",
                "report",
                "checkpoint",
                "history"
            ]
        );
    }

    /// A TOML value of any kind, biased towards what breaks loaders: integers at and
    /// past every bound, odd floats, control characters, placeholders and references
    /// to a 100 kB environment variable.
    fn any_value() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            any::<i64>().prop_map(|i| i.to_string()),
            prop::sample::select(vec![
                "0",
                "1",
                "-1",
                "31536000",
                "31536001",
                "9223372036854775807",
                "18446744073709551616",
                "1e20",
                "nan",
                "-inf",
                "0.0",
                "true",
                "false",
                "[]",
                "{}",
                "[1, \"a\"]",
                "[\"./d:/app/d\"]",
                "[\"nocolon\"]",
                "\"\"",
                "\" \"",
                "\"\\u0000\"",
                "\"a/b\"",
                "\"..\"",
                "\"${HUGE}\"",
                "\"${MISSING}\"",
                "\"${HUGE:-x}\"",
                "\"$$\"",
                "\"{filters}\"",
                "\"{tests} {result_file}\"",
                "\"{name}\"",
                "\"always\"",
                "\"flag\"",
                "\"'unclosed\"",
                "1979-05-27",
            ])
            .prop_map(str::to_owned),
            "[a-z {}$:/._'-]{0,30}".prop_map(|s| format!("\"{s}\"")),
        ]
    }

    /// `key = value` lines for a table, keys drawn from `keys` (and one unknown).
    fn table_body(
        keys: &'static [&'static str],
    ) -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop::collection::vec((prop::sample::select(keys), any_value()), 0..5)
            .prop_map(|pairs| pairs.iter().map(|(k, v)| format!("{k} = {v}\n")).collect())
    }

    proptest::proptest! {
        #![proptest_config(crate::proptest_config(500))]
        /// Whatever the file says: no panic; a config that loads keeps the promises
        /// the rest of Offload relies on; an error is a bounded message.
        #[test]
        fn any_config_loads_within_bounds_or_says_why(
            offload in table_body(&["max_parallel", "test_timeout_secs", "sandbox_project_root", "working_dir", "max_parallel_collection", "bogus"]),
            provider_type in proptest::sample::select(vec!["local", "default", "modal", "lcoal"]),
            provider in table_body(&["timeout_secs", "create_command", "exec_command", "destroy_command", "prepare_command", "cpu_cores", "shell", "copy_dirs", "memory_gb"]),
            framework_type in proptest::sample::select(vec!["pytest", "cargo", "nextest", "default"]),
            framework in table_body(&["discover_command", "run_command", "test_id_format", "result_file", "command", "run_args", "python"]),
            group in table_body(&["retry_count", "filters"]),
            report in table_body(&["junit", "junit_file", "output_dir"]),
            history in table_body(&["record_history", "default_duration_secs", "reservoir_size"]),
        ) {
            let text = format!(
                "[offload]\n{offload}\n[provider]\ntype = \"{provider_type}\"\n{provider}\n\
                 [framework]\ntype = \"{framework_type}\"\n{framework}\n[groups.all]\n{group}\n\
                 [report]\n{report}\n[history]\n{history}"
            );
            let huge = "h".repeat(100_000);
            let env = |name: &str| (name == "HUGE").then(|| huge.clone());
            match load_str_with_env(&text, Path::new("offload.toml"), &env) {
                Ok(loaded) => {
                    let c = loaded.config;
                    proptest::prop_assert!(c.offload.max_parallel >= 1);
                    proptest::prop_assert!(
                        (1..=super::super::validate::MAX_TIMEOUT_SECS).contains(&c.offload.test_timeout_secs)
                    );
                    if let ProviderConfig::Default(p) = &c.provider {
                        proptest::prop_assert!(
                            (1..=super::super::validate::MAX_TIMEOUT_SECS).contains(&p.timeout_secs)
                        );
                    }
                    let file = &c.report.junit_file;
                    proptest::prop_assert!(
                        !file.trim().is_empty() && file.len() <= 255 && !file.contains(['/', '\0'])
                    );
                    proptest::prop_assert!(!c.report.output_dir.as_os_str().is_empty());
                    proptest::prop_assert!(!c.groups.is_empty());
                }
                Err(err) => {
                    let msg = format!("{err:#}");
                    proptest::prop_assert!(msg.contains("offload.toml"), "{}", msg);
                    proptest::prop_assert!(msg.len() < 2_000, "{} bytes: {}…", msg.len(), &msg[..300]);
                }
            }
        }
    }
}
