//! The kinds of `[provider]` and `[framework]`, each declared once beside its code.
//!
//! `provider/mod.rs` and `framework/mod.rs` each hold one [`section_kinds!`] list, a line
//! per kind: the module that implements it and the type of its config section. The
//! macro turns the list into the module declarations, the config enum (one variant per
//! section type), the kind enum, and the dispatch the loader needs to parse a section
//! whose type is known only once `type` is read. Everything else about a kind — its
//! `type` names, its `offload init` text, its checks — is written in its own file, on its
//! section type. So a new provider or framework is its file plus its line in the list,
//! and no match anywhere has a catch-all arm to hide it.

use serde::de::DeserializeOwned;

/// A `type` value of `[provider]` or `[framework]`: the names, their other spellings,
/// and how messages list them.
pub(crate) trait Kind: Copy + Eq + std::fmt::Debug + 'static {
    /// Every kind, in the order messages list them.
    fn all() -> &'static [Self];
    /// The `type` value, canonical spelling.
    fn name(self) -> &'static str;
    /// Other accepted spellings of the `type` value.
    fn aliases(self) -> &'static [&'static str];

    /// The kind `written` names, in any spelling.
    fn named(written: &str) -> Option<Self> {
        Self::all()
            .iter()
            .copied()
            .find(|k| k.name() == written || k.aliases().contains(&written))
    }

    /// `` `pytest`, `cargo` (also spelled `nextest`), `default` ``.
    fn listing() -> String {
        let shown: Vec<String> = Self::all()
            .iter()
            .map(|k| match k.aliases() {
                [] => format!("`{}`", k.name()),
                aliases => format!(
                    "`{}` (also spelled {})",
                    k.name(),
                    aliases
                        .iter()
                        .map(|a| format!("`{a}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
            .collect();
        shown.join(", ")
    }
}

/// What a section type says about its kind, with no section at hand: its `type` names
/// and whatever else the side (provider or framework) asks of a kind, in `Info`.
pub(crate) trait Described: DeserializeOwned + 'static {
    /// The facts of the side (`ProviderInfo`, `FrameworkInfo`).
    type Info: 'static;
    /// This kind's facts.
    const INFO: Self::Info;
}

/// Declares the kinds of one side (providers or frameworks).
///
/// ```text
/// section_kinds! {
///     /// docs
///     pub enum ProviderConfig: ProviderSection, info ProviderInfo;
///     /// docs
///     pub(crate) enum ProviderKind;
///     pub(crate) mod local::LocalProviderConfig as Local;
///     ...
/// }
/// ```
///
/// Each section type implements the side's behaviour trait (object safe: the config enum
/// hands it out as `&dyn`) and [`Described`] with the side's info struct, which has at
/// least `name`, `aliases` and `summary`. The generated kind enum implements [`Kind`]
/// and clap's `ValueEnum` (`offload init -p/-f`), and `visit`s the section type of a kind.
macro_rules! section_kinds {
    (
        $(#[$cmeta:meta])*
        $cvis:vis enum $Config:ident: $Trait:ident, info $Info:ident;
        $(#[$kmeta:meta])*
        $kvis:vis enum $Kind:ident, visited by $Visitor:ident;
        $( $mvis:vis mod $module:ident :: $Type:ident as $Variant:ident; )+
    ) => {
        $( $mvis mod $module; )+

        $(#[$cmeta])*
        #[derive(Debug, Clone)]
        $cvis enum $Config {
            $(
                #[doc = concat!("`", stringify!($module), "`: see [`", stringify!($Type), "`](", stringify!($module), "::", stringify!($Type), ").")]
                $Variant($module::$Type),
            )+
        }

        $(#[$kmeta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $kvis enum $Kind {
            $(
                #[doc = concat!("`", stringify!($module), "`.")]
                $Variant,
            )+
        }

        /// Something done with the section type of a kind known only at run time
        /// (see the kind's `visit`).
        $kvis trait $Visitor {
            /// What the visit returns.
            type Output;
            /// Does it for the section type `S`.
            fn visit<S>(self) -> Self::Output
            where
                S: $Trait + $crate::config::Described<Info = $Info> + Into<$Config>;
        }

        impl $Kind {
            /// Calls `visitor` with this kind's section type.
            pub(crate) fn visit<V: $Visitor>(self, visitor: V) -> V::Output {
                match self {
                    $( Self::$Variant => visitor.visit::<$module::$Type>(), )+
                }
            }

            /// The facts this kind's section type declares.
            pub(crate) fn info(self) -> &'static $Info {
                match self {
                    $( Self::$Variant => &<$module::$Type as $crate::config::Described>::INFO, )+
                }
            }
        }

        impl $crate::config::Kind for $Kind {
            fn all() -> &'static [Self] {
                &[ $( Self::$Variant, )+ ]
            }
            fn name(self) -> &'static str {
                self.info().name
            }
            fn aliases(self) -> &'static [&'static str] {
                self.info().aliases
            }
        }

        impl ::clap::ValueEnum for $Kind {
            fn value_variants<'a>() -> &'a [Self] {
                <Self as $crate::config::Kind>::all()
            }
            fn to_possible_value(&self) -> Option<::clap::builder::PossibleValue> {
                let info = self.info();
                Some(
                    ::clap::builder::PossibleValue::new(info.name)
                        .aliases(info.aliases.iter().copied())
                        .help(info.summary),
                )
            }
        }

        impl $Config {
            /// Its kind.
            pub(crate) fn kind(&self) -> $Kind {
                match self {
                    $( Self::$Variant(_) => $Kind::$Variant, )+
                }
            }

            /// The `type` value (canonical spelling).
            pub(crate) fn type_name(&self) -> &'static str {
                self.kind().info().name
            }

            /// The section, for what every kind decides for itself.
            pub(crate) fn section(&self) -> &dyn $Trait {
                match self {
                    $( Self::$Variant(section) => section, )+
                }
            }

            /// The section, mutable.
            #[allow(dead_code, reason = "not every side changes its section after loading")]
            pub(crate) fn section_mut(&mut self) -> &mut dyn $Trait {
                match self {
                    $( Self::$Variant(section) => section, )+
                }
            }
        }

        $(
            impl From<$module::$Type> for $Config {
                fn from(section: $module::$Type) -> Self {
                    Self::$Variant(section)
                }
            }
        )+
    };
}

pub(crate) use section_kinds;
