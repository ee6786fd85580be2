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
    /// Pauses or resumes a whole queue for every organization (an operator's switch; an
    /// organization's admin pauses its own jobs through the API), or lists the pauses.
    Queue {
        #[command(subcommand)]
        action: QueueAction,
    },
}

#[derive(Subcommand)]
enum QueueAction {
    /// Workers claim nothing from QUEUE until it is resumed; running jobs finish.
    Pause { queue: String },
    /// Workers claim from QUEUE again, at once.
    Resume { queue: String },
    /// Every pause in place: whole queues and organizations' own.
    List,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let started = match cli.command {
        Some(Command::OpenBackup { input, output, key }) => {
            return open_backup(&input, output.as_deref(), &key).await;
        }
        command => match process::start("zoark-worker") {
            Ok(started) => (started, command),
            Err(code) => return code,
        },
    };
    let result = match started {
        (started, Some(Command::Queue { action })) => queue(&started.settings, action).await,
        (started, _) => match zoark_worker::check_embedding_model(&started.settings).await {
            Ok(()) => zoark_worker::run(started.settings, process::shutdown_token()).await,
            Err(e) => Err(e),
        },
    };
    process::exit("zoark-worker", result)
}

async fn queue(settings: &zoark_core::Settings, action: QueueAction) -> anyhow::Result<()> {
    use zoark_jobs::admin;
    let pool = zoark_core::db::pool(settings)?;
    let mut conn = pool.acquire().await?;
    match action {
        QueueAction::Pause { queue } => {
            let name: admin::QueueName = queue.parse()?;
            let (pause, _) = admin::pause_queue(&mut conn, None, &name, None).await?;
            println!(
                "{} paused for everyone since {}",
                pause.queue, pause.paused_at
            );
        }
        QueueAction::Resume { queue } => {
            let name: admin::QueueName = queue.parse()?;
            if admin::resume_queue(&mut conn, None, &name).await? {
                println!("{name} resumed");
            } else {
                println!("{name} was not paused for everyone (organizations' own pauses stay)");
            }
        }
        QueueAction::List => {
            for pause in admin::queue_pauses(&mut conn, None).await? {
                let whom = pause
                    .organization_id
                    .map_or_else(|| "everyone".to_owned(), |o| format!("organization {o}"));
                println!(
                    "{}\tpaused for {whom} since {}",
                    pause.queue, pause.paused_at
                );
            }
        }
    }
    Ok(())
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
