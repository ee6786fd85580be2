//! `zoark-worker`: the `worker` process of the Procfile; scale it horizontally.
//!
//! `zoark-worker open-backup <file>` decrypts a sealed database backup for `pg_restore`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use zoark_core::{process, settings::EncryptionKey};

#[derive(Parser)]
#[command(
    name = "zoark-worker",
    about = "Runs Zoark's jobs; with a command, a backup tool."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Decrypts a backup sealed with ZOARK_BACKUP_ENCRYPTION_KEY (a `.dump.sealed` file) into
    /// pg_dump's custom format: `zoark-worker open-backup b.dump.sealed | pg_restore -d …`.
    OpenBackup {
        /// The sealed backup file.
        input: PathBuf,
        /// Where to write the dump; standard output when omitted.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// The key the backup was sealed with (base64 of 32 bytes).
        #[arg(long, env = "ZOARK_BACKUP_ENCRYPTION_KEY", hide_env_values = true)]
        key: String,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::OpenBackup { input, output, key }) = cli.command {
        return open_backup(&input, output.as_deref(), &key).await;
    }
    let started = match process::start("zoark-worker") {
        Ok(started) => started,
        Err(code) => return code,
    };
    let result = zoark_worker::run(started.settings, process::shutdown_token()).await;
    process::exit("zoark-worker", result)
}

async fn open_backup(
    input: &std::path::Path,
    output: Option<&std::path::Path>,
    key: &str,
) -> std::process::ExitCode {
    let opened = match EncryptionKey::parse("ZOARK_BACKUP_ENCRYPTION_KEY", key) {
        Ok(key) => zoark_worker::backup::open_sealed(&key, input, output).await,
        Err(error) => Err(error.into()),
    };
    match opened {
        Ok(bytes) => {
            eprintln!("zoark-worker: opened {} ({bytes} bytes)", input.display());
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("zoark-worker: open-backup failed: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
