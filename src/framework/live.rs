//! Per-test events from inside a running batch.
//!
//! A batch's runner may say, on any line of its output, that a test started or finished
//! ([`LiveEvent`]). Offload shows them as they come and keeps a finished test's result
//! even when the batch is killed later (timeout, interrupt, fail-fast); the batch's
//! result file, when it comes, stays the authority for details.
//!
//! Any runner can report this way by printing Offload's own lines: [`MARKER`] followed
//! by one JSON object, `{"event": "started", "id": ID}` or `{"event": "finished", "id":
//! ID, "outcome": "passed"|"failed"|"error"|"skipped", "time": SECONDS, "message":
//! TEXT}` (`time` and `message` optional), where `ID` is the test's ID or any key of
//! [`super::Framework::id_keys`]. The bundled pytest plugin prints them; such lines are
//! kept out of the batch log. A framework may also read its runner's own lines (cargo
//! reads nextest's status lines, see [`super::cargo`]).

use serde::Deserialize;

use crate::report::junit::{CaseOutcome, Detail};

/// How a test ended, as its runner said while the batch ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveOutcome {
    /// It passed.
    Passed,
    /// It failed.
    Failed,
    /// It errored (setup, teardown, ...).
    Error,
    /// It was skipped.
    Skipped,
}

/// What starts each of Offload's event lines.
pub(crate) const MARKER: &str = "##offload-event## ";

/// One event from inside a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveEvent {
    /// The test under `key` started.
    Started {
        /// The test's ID or one of its keys.
        key: String,
    },
    /// The test under `key` finished.
    Finished {
        /// The test's ID or one of its keys.
        key: String,
        /// Its outcome.
        outcome: LiveOutcome,
        /// How long it took, in seconds.
        time: f64,
        /// The one-line reason when it did not pass, if the runner gave one.
        message: Option<String>,
    },
    /// The runner could not run the batch the fast way and ran it the plain way
    /// (`{"event": "resident-fallback", "id": "", "message": REASON}`: the pytest
    /// resident worker); said once per run.
    Fallback {
        /// Why.
        reason: String,
    },
}

/// The report model's outcome for a live `outcome` with `message`.
pub(crate) fn case_outcome(outcome: LiveOutcome, message: Option<String>) -> CaseOutcome {
    let detail = || Detail {
        message: message.filter(|m| !m.is_empty()),
        kind: None,
        body: String::new(),
    };
    match outcome {
        LiveOutcome::Passed => CaseOutcome::Passed,
        LiveOutcome::Failed => CaseOutcome::Failed(detail()),
        LiveOutcome::Error => CaseOutcome::Error(detail()),
        LiveOutcome::Skipped => CaseOutcome::Skipped(detail()),
    }
}

/// The JSON of one marked line.
#[derive(Deserialize)]
struct Line {
    event: String,
    id: String,
    #[serde(default)]
    outcome: Option<String>,
    #[serde(default)]
    time: Option<f64>,
    #[serde(default)]
    message: Option<String>,
}

/// The event of a line of Offload's own form (see the module docs); `None` for any
/// other line, and for a marked line that does not parse (it is logged at debug level).
pub(crate) fn parse_marked(line: &str) -> Option<LiveEvent> {
    let json = line.strip_prefix(MARKER)?;
    let parsed: Line = match serde_json::from_str(json) {
        Ok(parsed) => parsed,
        Err(err) => {
            tracing::debug!("unreadable event line `{line}`: {err}");
            return None;
        }
    };
    let key = parsed.id;
    match parsed.event.as_str() {
        "started" => Some(LiveEvent::Started { key }),
        "finished" => {
            let outcome = match parsed.outcome.as_deref() {
                Some("passed") => LiveOutcome::Passed,
                Some("failed") => LiveOutcome::Failed,
                Some("error") => LiveOutcome::Error,
                Some("skipped") => LiveOutcome::Skipped,
                other => {
                    tracing::debug!("event line with an unknown outcome {other:?}: `{line}`");
                    return None;
                }
            };
            let time = parsed.time.filter(|t| t.is_finite() && *t >= 0.0);
            Some(LiveEvent::Finished {
                key,
                outcome,
                time: time.unwrap_or(0.0),
                message: parsed.message.filter(|m| !m.is_empty()),
            })
        }
        "resident-fallback" => Some(LiveEvent::Fallback {
            reason: parsed.message.unwrap_or_default(),
        }),
        other => {
            tracing::debug!("event line with an unknown event `{other}`: `{line}`");
            None
        }
    }
}

/// Warns that batches run the plain way because of `reason` (a
/// [`LiveEvent::Fallback`]), once per reason and run: each remote sandbox may say it.
pub(crate) fn say_fallback_once(reason: &str) {
    static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut said = SAID.lock().unwrap_or_else(|p| p.into_inner());
    if !said.iter().any(|r| r == reason) {
        tracing::warn!(
            "one pytest per batch instead of the resident worker: {reason} (hint: \
             `resident_worker = false` in `[framework]` turns the worker off)"
        );
        said.push(reason.to_owned());
    }
}

/// Whether `line` is one of Offload's event lines, which stay out of the batch log.
pub(crate) fn is_marked(line: &str) -> bool {
    line.starts_with(MARKER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marked_lines_become_events_and_other_lines_do_not() {
        assert_eq!(
            parse_marked(r#"##offload-event## {"event": "started", "id": "t::a"}"#),
            Some(LiveEvent::Started { key: "t::a".into() })
        );
        let finished = parse_marked(
            r#"##offload-event## {"event": "finished", "id": "t::b", "outcome": "failed", "time": 0.5, "message": "AssertionError: x"}"#,
        );
        let Some(LiveEvent::Finished {
            key,
            outcome,
            time,
            message,
        }) = finished
        else {
            panic!("{finished:?}");
        };
        assert_eq!((key.as_str(), time), ("t::b", 0.5));
        assert_eq!(outcome, LiveOutcome::Failed);
        let case = case_outcome(outcome, message);
        assert!(matches!(case, CaseOutcome::Failed(_)));
        assert_eq!(
            case.detail().and_then(|d| d.message.as_deref()),
            Some("AssertionError: x")
        );
        for line in [
            "plain output",
            r#"{"event": "started", "id": "t::a"}"#,
            "##offload-event## not json",
            r#"##offload-event## {"event": "finished", "id": "t", "outcome": "weird"}"#,
            r#"##offload-event## {"event": "paused", "id": "t"}"#,
        ] {
            assert_eq!(parse_marked(line), None, "{line}");
        }
        assert!(is_marked(MARKER));
        assert!(!is_marked(" ##offload-event## {}"));
    }
}
