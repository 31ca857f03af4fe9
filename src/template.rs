//! `{placeholder}` substitution in the command templates of the configuration: one
//! pass, left to right, so a substituted value is never scanned for placeholders again
//! (an ID that reads `{result_file}` stays as it is); braces that name no placeholder
//! stay as written. Quoting values for the shell is the caller's business
//! ([`crate::process::quote`]).

/// Replaces each `{name}` of `values` in `template` by its value, in one left-to-right
/// pass; other braces stay as written.
pub(crate) fn substitute(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let value = after.find('}').and_then(|close| {
            let name = &after[..close];
            values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v, close))
        });
        match value {
            Some((value, close)) => {
                out.push_str(value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_is_one_pass_and_leaves_other_braces() {
        let values = [("sandbox_id", "{command}"), ("command", "'a b'")];
        assert_eq!(
            substitute("x {sandbox_id} {command} ${HOME} {other} {", &values),
            "x {command} 'a b' ${HOME} {other} {"
        );
        assert_eq!(substitute("{a}{a}", &[("a", "1")]), "11");
        assert_eq!(substitute("{{a}}", &[("a", "1")]), "{1}");
        assert_eq!(substitute("ünï {a} ç", &[("a", "é")]), "ünï é ç");
        assert_eq!(substitute("", &values), "");
    }
}
