//! `apalis-peer`: one apalis-postgres worker process for `zoark-bench queue` (see
//! `zoark_bench::apalis`). `DATABASE_URL`, `BENCH_CONCURRENCY` (slots) and `BENCH_BATCH` (tasks
//! per fetch) from the environment; prints `ready`, stops on SIGTERM.

fn main() -> std::process::ExitCode {
    let number = |name: &str, fallback: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(fallback)
    };
    let url = std::env::var("DATABASE_URL").unwrap_or_default();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| {
            runtime.block_on(zoark_bench::apalis::run_worker(
                &url,
                number("BENCH_CONCURRENCY", 24),
                number("BENCH_BATCH", 500),
            ))
        });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("apalis-peer: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
