//! `zoark-api`: `serve` (the `web` process), `migrate` (the `release` phase), `openapi` (prints
//! the spec), `permissions` (prints the permission matrix), and `dev-seed` (the development organization; refused in production).

use clap::{Parser, Subcommand};
use zoark_core::{Settings, process};

#[derive(Parser)]
#[command(name = "zoark-api", version, about = "The Zoark HTTP API")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API on $PORT (the default).
    Serve,
    /// Apply every migration (Zoark's and the job queue's) and exit.
    Migrate,
    /// Print the OpenAPI spec as JSON.
    Openapi,
    /// Print the permission matrix (docs/permissions.md) as Markdown.
    Permissions,
    /// Create the development organization and admin user if they do not exist; prints the
    /// credentials once. Refused when ZOARK_ENV=production.
    DevSeed,
    /// Re-seal every stored secret (SMTP passwords, OAuth tokens, LLM keys, webhook secrets,
    /// queued system emails) under the current ZOARK_ENCRYPTION_KEY, printing each column's
    /// progress; afterwards the keys of ZOARK_ENCRYPTION_OLD_KEYS can be retired. Safe to run
    /// beside the live platform, and again.
    RotateKeys,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Openapi) => {
            println!("{}", zoark_api::spec_json());
            return std::process::ExitCode::SUCCESS;
        }
        Some(Command::Permissions) => {
            print!("{}", zoark_api::permissions::markdown());
            return std::process::ExitCode::SUCCESS;
        }
        _ => {}
    }
    let started = match process::start("zoark-api") {
        Ok(started) => started,
        Err(code) => return code,
    };
    let settings = started.settings;
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => zoark_api::serve(settings, zoark_core::shutdown::signal()).await,
        Command::Migrate => migrate(&settings).await,
        Command::DevSeed => dev_seed(&settings).await,
        Command::RotateKeys => rotate_keys(&settings).await,
        Command::Openapi | Command::Permissions => Ok(()),
    };
    process::exit("zoark-api", result)
}

async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let pool = zoark_core::db::pool(settings)?;
    zoark_core::db::migrate_all(&pool).await?;
    tracing::info!("migrations applied");
    pool.close().await;
    Ok(())
}

async fn rotate_keys(settings: &Settings) -> anyhow::Result<()> {
    let pool = zoark_core::db::pool(settings)?;
    println!(
        "Re-sealing stored secrets under key {}:",
        settings.encryption_key.id()
    );
    let done = zoark_core::db::rotation::reseal_all(&pool, &settings.encryption_key, |r| {
        println!(
            "  {:<48} {:>7} re-sealed, {:>7} already current, {:>5} changed meanwhile",
            r.what, r.resealed, r.current, r.changed
        );
    })
    .await?;
    let total: u64 = done.iter().map(|r| r.resealed).sum();
    println!(
        "Done: {total} re-sealed. Keep the old keys until queued jobs and idempotent replays \
         made before now are past (24 hours), then remove them from ZOARK_ENCRYPTION_OLD_KEYS."
    );
    pool.close().await;
    Ok(())
}

async fn dev_seed(settings: &Settings) -> anyhow::Result<()> {
    if settings.is_production() {
        anyhow::bail!("dev-seed is refused when ZOARK_ENV=production");
    }
    let pool = zoark_core::db::pool(settings)?;
    match zoark_core::db::dev_seed::ensure_dev_organization(&pool).await? {
        Some(created) => {
            println!(
                "Created the development organization \"{}\".",
                created.organization_name
            );
            println!("  admin email:    {}", created.email);
            println!("  admin password: {}", created.password);
            println!("This password is shown once; it is stored only as an argon2id hash.");
        }
        None => println!(
            "The development organization already exists (its password was printed when it was created)."
        ),
    }
    pool.close().await;
    Ok(())
}
