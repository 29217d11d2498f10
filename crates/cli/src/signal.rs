//! Shutdown signals: the first SIGTERM/SIGINT asks the command to stop cleanly, a second exits at once.
//!
//! ECS sends SIGTERM and waits the task's stop timeout before SIGKILL; an operator at a terminal presses
//! Ctrl-C. Both expect the first signal to drain (checkpoints, leases released) and a second one to be
//! obeyed now, even when the drain hangs on an unreachable endpoint.

/// The exit code after a second signal (128 + SIGINT, what shells report for an interrupted command).
pub const EXIT_INTERRUPTED: u8 = 130;

/// The signals this process listens to, installed once for both the first and the second signal.
struct Signals {
    #[cfg(unix)]
    unix: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
                (Ok(term), Ok(int)) => Self {
                    unix: Some((term, int)),
                },
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM; stopping on Ctrl-C only");
                    Self { unix: None }
                }
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// The next signal's name; never completes when no handler could be installed (the process is then
    /// killed by the signal instead).
    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        if let Some((term, int)) = &mut self.unix {
            return tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
        }
        if tokio::signal::ctrl_c().await.is_ok() {
            "SIGINT"
        } else {
            std::future::pending().await
        }
    }
}

/// Completes on the first SIGTERM or SIGINT, logging `what` (e.g. "stopping at the next page boundary").
/// From then on a second SIGTERM or SIGINT exits the process at once with [`EXIT_INTERRUPTED`].
///
/// Must be polled inside a Tokio runtime (it spawns the watcher of the second signal).
pub async fn shutdown_signal(what: &'static str) {
    let mut signals = Signals::install();
    let name = signals.recv().await;
    tracing::info!(signal = name, "{what}; a second signal exits at once");
    tokio::spawn(async move {
        let name = signals.recv().await;
        tracing::warn!(signal = name, code = EXIT_INTERRUPTED, "second signal: exiting now");
        std::process::exit(i32::from(EXIT_INTERRUPTED));
    });
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    const CHILD_ENV: &str = "DDBGUARD_SIGNAL_TEST_CHILD";

    fn kill(pid: u32, signal: &str) {
        let status = Command::new("kill").args([signal, &pid.to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// The child half of `second_signal_exits_at_once` (does nothing unless started by it): waits for the
    /// first signal, reports it, then hangs as a stuck drain would.
    #[test]
    fn signal_child() {
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let first = tokio::spawn(shutdown_signal("test: stopping"));
            // Give the task time to install its handlers before announcing readiness.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            println!("ARMED");
            first.await.unwrap();
            println!("FIRST");
            std::future::pending::<()>().await;
        });
    }

    #[test]
    fn second_signal_exits_at_once() {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "signal::tests::signal_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut wait_for = |want: &str| {
            for line in lines.by_ref() {
                if line.unwrap().contains(want) {
                    return;
                }
            }
            panic!("the child exited before printing {want}");
        };
        wait_for("ARMED");
        kill(pid, "-TERM");
        wait_for("FIRST");
        // The first signal did not end the process: it is still draining (hanging here).
        assert!(child.try_wait().unwrap().is_none());
        kill(pid, "-INT");
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(i32::from(EXIT_INTERRUPTED)));
    }
}
