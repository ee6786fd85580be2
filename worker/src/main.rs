//! `zoark-worker`: the `worker` process of the Procfile; scale it horizontally.

use zoark_core::process;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let started = match process::start("zoark-worker") {
        Ok(started) => started,
        Err(code) => return code,
    };
    let result = zoark_worker::run(started.settings, process::shutdown_token()).await;
    process::exit("zoark-worker", result)
}
