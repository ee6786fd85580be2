//! `zoark-scheduler`: the `scheduler` process; one is enough, extra replicas wait on the lock.

use zoark_core::process;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let started = match process::start("zoark-scheduler") {
        Ok(started) => started,
        Err(code) => return code,
    };
    let (leader, _) = tokio::sync::watch::channel(false);
    let timing = zoark_scheduler::Timing::default();
    let result =
        zoark_scheduler::run(started.settings, timing, leader, process::shutdown_token()).await;
    process::exit("zoark-scheduler", result)
}
