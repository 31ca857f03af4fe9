//! The run engine: a shared queue of batches, one worker per sandbox, reactive retries,
//! verdicts, cancellation.
//!
//! [`engine`] owns the run state and the workers; [`batch`] executes one batch in one
//! sandbox and maps its results back to tests; [`events`] is what the engine tells its
//! subscribers as the run goes, and [`progress`] is the subscriber that shows how far
//! the run is; [`warm`] starts resident workers while the tests are discovered. See
//! `DESIGN.md` beside this file for the life of a run and its invariants.

mod batch;
mod engine;
mod events;
pub(crate) mod progress;
mod warm;

pub(crate) use engine::{EngineOutcome, EngineSettings, run};
pub(crate) use warm::{HeadStart, WarmUp};

/// What the engine's and the warm-ups' tests run instead of a real framework and
/// provider.
#[cfg(test)]
mod fakes {
    use std::collections::HashMap;
    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use anyhow::{Result, bail};
    use async_trait::async_trait;
    use tokio::sync::mpsc::UnboundedSender;
    use tokio_util::sync::CancellationToken;

    use crate::framework::{BatchCommand, BatchPaths, Discovered, Framework, InputFile};
    use crate::process::{CapturedOutput, CommandSpec, ExitOutcome};
    use crate::provider::{OutputLine, Provider, Sandbox};

    /// Runs `fake TEST...` with the result path in `RESULT`; discovers nothing and has
    /// no resident worker.
    pub(super) struct FakeFramework;

    impl Framework for FakeFramework {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn discover_command(&self, _: &str) -> Result<CommandSpec> {
            bail!("not used")
        }
        fn parse_discovery(&self, _: &CommandSpec, _: &CapturedOutput) -> Result<Discovered> {
            bail!("not used")
        }
        fn batch_command(
            &self,
            tests: &[String],
            paths: &BatchPaths,
            _: bool,
        ) -> Result<BatchCommand> {
            Ok(CommandSpec::new("fake")
                .args(tests)
                .env("RESULT", &paths.result)
                .into())
        }
        fn junit_key<'a>(&self, name: &'a str, _: Option<&'a str>) -> std::borrow::Cow<'a, str> {
            std::borrow::Cow::Borrowed(name)
        }
    }

    /// What one attempt of a test does, by attempt number.
    #[derive(Clone, Copy, Debug)]
    pub(super) enum Act {
        Pass,
        Fail,
        NoResult,
        Hang,
        /// The sandbox is lost while the test runs (its host went down).
        Lose,
    }

    #[derive(Default)]
    pub(super) struct World {
        pub(super) script: HashMap<String, Vec<Act>>,
        pub(super) attempts: Mutex<HashMap<String, usize>>,
        pub(super) files: Mutex<HashMap<String, String>>,
        pub(super) failing_creates: Vec<usize>,
        pub(super) dirty_after_timeout: bool,
        /// Batches report each test as it starts and finishes.
        pub(super) live: bool,
        pub(super) created: AtomicUsize,
        pub(super) destroyed: AtomicUsize,
    }

    pub(super) struct FakeProvider(pub(super) Arc<World>);
    struct FakeSandbox(Arc<World>, String);

    #[async_trait]
    impl Provider for FakeProvider {
        async fn create_sandbox(&self, index: usize) -> Result<Box<dyn Sandbox>> {
            if self.0.failing_creates.contains(&index) {
                bail!("quota exceeded for sandbox {index}");
            }
            self.0.created.fetch_add(1, Ordering::SeqCst);
            Ok(Box::new(FakeSandbox(
                Arc::clone(&self.0),
                format!("fake-{index}"),
            )))
        }
    }

    #[async_trait]
    impl Sandbox for FakeSandbox {
        fn id(&self) -> &str {
            &self.1
        }
        fn result_path(&self, batch: usize, ext: &str) -> String {
            format!("{}/batch-{batch}.{ext}", self.1)
        }
        fn support_dir(&self) -> String {
            format!("{}/support", self.1)
        }
        async fn write_files(&self, _: &[InputFile], _: &CancellationToken) -> Result<()> {
            bail!("not used")
        }
        async fn exec(
            &self,
            command: &CommandSpec,
            timeout: Duration,
            cancel: &CancellationToken,
            output: &UnboundedSender<OutputLine>,
        ) -> Result<ExitOutcome> {
            let mut cases = String::new();
            let mut hang = false;
            // With `live`, the tests run in order and say so, as the pytest plugin does.
            let say = |event: String| {
                if self.0.live {
                    let text = format!("{}{event}", crate::framework::live::MARKER);
                    let _ = output.send(OutputLine {
                        stream: crate::process::Stream::Stderr,
                        text,
                    });
                }
            };
            for id in &command.args {
                if hang && self.0.live {
                    break;
                }
                say(format!(r#"{{"event": "started", "id": "{id}"}}"#));
                let finished = |outcome: &str| {
                    say(format!(
                        r#"{{"event": "finished", "id": "{id}", "outcome": "{outcome}"}}"#
                    ))
                };
                let n = {
                    let mut attempts = self.0.attempts.lock().unwrap();
                    let n = attempts.entry(id.clone()).or_default();
                    *n += 1;
                    *n
                };
                let acts = &self.0.script[id];
                match acts[(n - 1).min(acts.len() - 1)] {
                    Act::Pass => {
                        finished("passed");
                        cases.push_str(&format!("<testcase name=\"{id}\"/>"));
                    }
                    Act::Fail => {
                        finished("failed");
                        cases.push_str(&format!(
                            "<testcase name=\"{id}\"><failure message=\"boom\"/></testcase>"
                        ));
                    }
                    Act::NoResult => {}
                    Act::Hang => hang = true,
                    Act::Lose => {
                        let lost = format!("sandbox `{}` was lost", self.1);
                        return Err(crate::provider::SandboxLost(lost).into());
                    }
                }
            }
            if hang {
                return Ok(tokio::select! {
                    () = tokio::time::sleep(timeout) => ExitOutcome::TimedOut,
                    () = cancel.cancelled() => ExitOutcome::Cancelled,
                });
            }
            let result = command.env[0].1.clone();
            let xml = format!("<testsuite name=\"s\">{cases}</testsuite>");
            self.0.files.lock().unwrap().insert(result, xml);
            Ok(ExitOutcome::Exited(0))
        }
        async fn download(&self, remote: &str, local: &Path) -> Result<()> {
            let Some(xml) = self.0.files.lock().unwrap().get(remote).cloned() else {
                bail!("no such file `{remote}`");
            };
            std::fs::create_dir_all(local.parent().unwrap())?;
            std::fs::write(local, xml)?;
            Ok(())
        }
        async fn destroy(&self) -> Result<()> {
            self.0.destroyed.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn is_clean_after_timeout(&self) -> bool {
            !self.0.dirty_after_timeout
        }
    }
}
