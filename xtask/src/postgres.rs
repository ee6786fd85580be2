//! Provisioning of Postgres for development and tests.
//!
//! With `DATABASE_URL` set, that server is used as is. Otherwise a project-local cluster lives in
//! `.zoark/pg` (reused across runs): the server binaries and the `vector`, `pgcrypto` and
//! `btree_gin` extensions are installed when missing (Debian: apt, and pgvector built from Debian's trixie
//! source package, which bookworm does not ship), the cluster is initialised, and started on a
//! port recorded in `.zoark/pg/port`. Only a cluster this run started is stopped again.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::process::{is_root, run, succeeds};

const EXTENSIONS: [&str; 3] = ["vector", "pgcrypto", "btree_gin"];
const SERVER_USER: &str = "postgres";
/// The role development and tests connect as: it owns their databases but is no superuser,
/// because row-level security does not apply to superusers.
const APP_ROLE: &str = "zoark";

/// A Postgres server ready for use.
pub struct Provisioned {
    /// Base URL without a database name, e.g. `postgres://zoark@127.0.0.1:54329`.
    base: String,
    /// The same server as its superuser (local clusters), for provisioning.
    admin_base: String,
    /// Set when the cluster is local and this run started it.
    started: Option<LocalCluster>,
    /// Set when the cluster is local (started now or before).
    local: Option<LocalCluster>,
}

#[derive(Clone)]
struct LocalCluster {
    bindir: PathBuf,
    data: PathBuf,
    profile: Profile,
}

/// Which project-local cluster: each has its own directory and server settings.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `.zoark/pg`, for `dev` and `test`: durability traded for speed.
    Dev,
    /// `.zoark/bench/pg`, for `bench queue` and `bench email`: stock durability, statement
    /// statistics.
    Bench,
    /// `.zoark/bench/search-pg`, for `bench search`: as [`Profile::Bench`], with 1 GB of shared
    /// buffers (pgvector's advice: the index and the rows it reads in memory; the 100,000-chunk
    /// corpus's are 455 MB).
    Search,
}

impl Profile {
    fn dir(self) -> &'static str {
        match self {
            Self::Dev => ".zoark/pg",
            Self::Bench => ".zoark/bench/pg",
            Self::Search => ".zoark/bench/search-pg",
        }
    }

    /// Where the search for a free port starts, so that both clusters can run at once.
    fn first_port(self) -> u16 {
        match self {
            Self::Dev => 54329,
            Self::Bench => 54429,
            Self::Search => 54529,
        }
    }

    fn settings(self) -> &'static str {
        match self {
            Self::Dev => {
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
            }
            Self::Bench => {
                "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track_utility=off \
                 -c max_connections=200"
            }
            Self::Search => {
                "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track_utility=off \
                 -c max_connections=200 -c shared_buffers=1GB"
            }
        }
    }
}

impl Provisioned {
    /// The URL of `database` on this server, as the application role.
    pub fn url(&self, database: &str) -> String {
        format!("{}/{database}", self.base)
    }

    fn admin_url(&self, database: &str) -> String {
        format!("{}/{database}", self.admin_base)
    }

    /// The server URL without a database.
    pub fn server(&self) -> &str {
        &self.base
    }

    /// A client program of the local cluster's installation (e.g. `pgbench`), else from PATH.
    pub fn client_bin(&self, name: &str) -> Result<PathBuf> {
        match &self.local {
            Some(cluster) if cluster.bin(name).exists() => Ok(cluster.bin(name)),
            _ => which(name),
        }
    }

    /// Stops the cluster if this run started it — and nothing else.
    pub fn stop_if_started(&self) -> Result<()> {
        if let Some(cluster) = &self.started {
            cluster.stop()?;
        }
        Ok(())
    }

    /// Creates `database` if it does not exist.
    pub fn ensure_database(&self, database: &str) -> Result<()> {
        let exists = self.psql(
            "postgres",
            &format!("SELECT 1 FROM pg_database WHERE datname = '{database}'"),
        )?;
        if exists.trim() != "1" {
            self.create_database(database)?;
            return Ok(());
        }
        // A database made before the application role existed belongs to the superuser.
        let owner = self.psql(
            "postgres",
            &format!(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{database}'"
            ),
        )?;
        if self.admin_base != self.base && owner.trim() != APP_ROLE {
            println!(
                "xtask: recreating {database} for the `{APP_ROLE}` role (it was {})",
                owner.trim()
            );
            self.recreate_database(database)?;
        }
        Ok(())
    }

    /// Drops and creates `database`.
    pub fn recreate_database(&self, database: &str) -> Result<()> {
        self.psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"),
        )?;
        self.create_database(database)
    }

    fn create_database(&self, database: &str) -> Result<()> {
        let owner = if self.admin_base == self.base {
            String::new()
        } else {
            format!(" OWNER \"{APP_ROLE}\"")
        };
        self.psql(
            "postgres",
            &format!("CREATE DATABASE \"{database}\"{owner}"),
        )?;
        Ok(())
    }

    /// The application role (no superuser, may create databases) and the extensions it cannot
    /// create itself (`vector` is not a trusted extension) in `template1`, so every database
    /// created from it has them.
    fn ensure_app_role(&self) -> Result<()> {
        self.psql(
            "postgres",
            &format!(
                "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') \
                 THEN CREATE ROLE \"{APP_ROLE}\" LOGIN CREATEDB; END IF; END $$"
            ),
        )?;
        for extension in EXTENSIONS {
            self.psql(
                "template1",
                &format!("CREATE EXTENSION IF NOT EXISTS \"{extension}\""),
            )?;
        }
        // Clusters provisioned before hstore was dropped (only apalis-postgres's schema used it)
        // still carry it; without it every new database shows that none needs it.
        self.psql("template1", "DROP EXTENSION IF EXISTS hstore")?;
        Ok(())
    }

    /// Drops the per-test databases (and templates) a previous run left behind.
    pub fn drop_test_databases(&self) -> Result<()> {
        let names = self.psql(
            "postgres",
            "SELECT datname FROM pg_database WHERE datname LIKE 'zoark\\_test\\_%'",
        )?;
        for name in names.lines().map(str::trim).filter(|n| !n.is_empty()) {
            self.psql(
                "postgres",
                &format!("UPDATE pg_database SET datistemplate = false WHERE datname = '{name}'"),
            )?;
            self.psql(
                "postgres",
                &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
            )?;
        }
        Ok(())
    }

    fn psql(&self, database: &str, sql: &str) -> Result<String> {
        let psql = self
            .local
            .as_ref()
            .map(|c| c.bindir.join("psql"))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("psql"));
        run(Command::new(psql)
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .arg(self.admin_url(database)))
    }

    /// Whether the extensions Zoark needs can be created on this server.
    fn check_extensions(&self) -> Result<()> {
        let available = self.psql("postgres", "SELECT name FROM pg_available_extensions")?;
        let missing: Vec<_> = EXTENSIONS
            .iter()
            .filter(|e| !available.lines().any(|l| l.trim() == **e))
            .collect();
        if !missing.is_empty() {
            bail!(
                "the server at DATABASE_URL lacks the extension(s) {missing:?}; Zoark needs vector (pgvector ≥ 0.7), \
                 pgcrypto and btree_gin (contrib)"
            );
        }
        let privileged = self.psql(
            "postgres",
            "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user",
        )?;
        if privileged.trim() == "t" {
            bail!(
                "DATABASE_URL connects as a superuser (or a BYPASSRLS role): row-level security would not \
                 apply and its tests would fail. Connect as a role without SUPERUSER and BYPASSRLS that owns \
                 the database and may create databases (CREATEDB)"
            );
        }
        Ok(())
    }
}

/// Provisions Postgres as described in the module documentation.
pub fn provision(root: &Path) -> Result<Provisioned> {
    provision_profile(root, Profile::Dev)
}

/// Provisions the cluster of `profile`; `DATABASE_URL` is honoured for [`Profile::Dev`] only.
pub fn provision_profile(root: &Path, profile: Profile) -> Result<Provisioned> {
    if let Ok(url) = std::env::var("DATABASE_URL")
        && !url.is_empty()
        && profile == Profile::Dev
    {
        let base = strip_database(&url);
        let pg = Provisioned {
            admin_base: base.clone(),
            base,
            started: None,
            local: None,
        };
        pg.check_extensions()
            .context("checking the server at DATABASE_URL")?;
        return Ok(pg);
    }
    let bindir = ensure_server()?;
    ensure_extensions(&bindir)?;
    let dir = cluster_dir(root, profile)?;
    let data = dir.join("data");
    let cluster = LocalCluster {
        bindir: bindir.clone(),
        data: data.clone(),
        profile,
    };
    if !data.join("PG_VERSION").exists() {
        cluster.init()?;
    }
    let port = cluster_port(&dir, profile.first_port())?;
    let started = if cluster.running() {
        None
    } else {
        cluster.start(&dir, port)?;
        Some(cluster.clone())
    };
    let admin_base = format!("postgres://{SERVER_USER}@127.0.0.1:{port}");
    // The benchmark measures the queue as a superuser; development and tests use the
    // application role, so row-level security applies as in production.
    let base = match profile {
        Profile::Dev => format!("postgres://{APP_ROLE}@127.0.0.1:{port}"),
        Profile::Bench | Profile::Search => admin_base.clone(),
    };
    let pg = Provisioned {
        base,
        admin_base,
        started,
        local: Some(cluster),
    };
    if profile == Profile::Dev {
        pg.ensure_app_role()?;
        pg.ensure_database("zoark_dev")?;
    }
    Ok(pg)
}

/// Stops the local cluster, whoever started it.
pub fn stop_local(root: &Path) -> Result<()> {
    let bindir = find_bindir().context("no Postgres installation found")?;
    let dir = cluster_dir(root, Profile::Dev)?;
    let cluster = LocalCluster {
        bindir,
        data: dir.join("data"),
        profile: Profile::Dev,
    };
    if cluster.running() {
        cluster.stop()?;
        println!("stopped the local cluster");
    } else {
        println!("the local cluster is not running");
    }
    Ok(())
}

fn strip_database(url: &str) -> String {
    // postgres://user@host:port/db?params -> postgres://user@host:port
    let without_query = url.split('?').next().unwrap_or(url);
    match without_query.find("://").map(|i| i + 3) {
        Some(start) => match without_query[start..].find('/') {
            Some(slash) => without_query[..start + slash].to_owned(),
            None => without_query.to_owned(),
        },
        None => without_query.to_owned(),
    }
}

impl LocalCluster {
    fn bin(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    /// Postgres refuses to run as root: run its tools as the `postgres` system user then.
    fn command(&self, name: &str) -> Command {
        if is_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", SERVER_USER, "--"]).arg(self.bin(name));
            cmd
        } else {
            Command::new(self.bin(name))
        }
    }

    fn init(&self) -> Result<()> {
        println!(
            "xtask: initialising a Postgres cluster in {}",
            self.data.display()
        );
        run(self.command("initdb").arg("-D").arg(&self.data).args([
            "-U",
            SERVER_USER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-locale",
        ]))?;
        Ok(())
    }

    fn running(&self) -> bool {
        self.data.join("postmaster.pid").exists()
            && self
                .command("pg_ctl")
                .arg("status")
                .arg("-D")
                .arg(&self.data)
                .output()
                .is_ok_and(|o| o.status.success())
    }

    fn start(&self, dir: &Path, port: u16) -> Result<()> {
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} {}",
            dir.display(),
            self.profile.settings()
        );
        run(self
            .command("pg_ctl")
            .arg("start")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(dir.join("postgres.log"))
            .args(["-w", "-t", "60", "-o", &options]))
        .with_context(|| {
            format!(
                "starting Postgres (log: {})",
                dir.join("postgres.log").display()
            )
        })?;
        println!("xtask: started Postgres on 127.0.0.1:{port}");
        Ok(())
    }

    fn stop(&self) -> Result<()> {
        run(self
            .command("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w"]))?;
        println!("xtask: stopped Postgres");
        Ok(())
    }
}

/// The profile's directory (`.zoark/pg`), owned by the server user when running as root. If that
/// user cannot reach the checkout (e.g. it lives under /root), the cluster goes to /var/tmp and
/// the directory links to it.
fn cluster_dir(root: &Path, profile: Profile) -> Result<PathBuf> {
    let dir = root.join(profile.dir());
    if dir.exists() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    if is_root() {
        // The server user must be able to traverse every folder down to the data directory.
        let mut owned = vec![dir.clone()];
        let mut parent = dir.parent();
        while let Some(p) = parent
            && p != root
        {
            owned.push(p.to_path_buf());
            parent = p.parent();
        }
        run(Command::new("chown").arg(SERVER_USER).args(&owned))?;
        let reachable = Command::new("runuser")
            .args(["-u", SERVER_USER, "--", "test", "-w"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !reachable {
            std::fs::remove_dir(&dir)?;
            let elsewhere = PathBuf::from(format!("/var/tmp/zoark-pg-{}", std::process::id()));
            std::fs::create_dir_all(&elsewhere)?;
            run(Command::new("chown").arg(SERVER_USER).arg(&elsewhere))?;
            std::os::unix::fs::symlink(&elsewhere, &dir)?;
            println!(
                "xtask: {} is not reachable by `postgres`; the cluster lives in {}",
                root.display(),
                elsewhere.display()
            );
        }
    }
    Ok(dir)
}

/// The recorded port, or a free one chosen and recorded now.
fn cluster_port(dir: &Path, first: u16) -> Result<u16> {
    let file = dir.join("port");
    if let Ok(text) = std::fs::read_to_string(&file)
        && let Ok(port) = text.trim().parse()
    {
        return Ok(port);
    }
    let port = (first..first + 70)
        .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .with_context(|| format!("no free port between {first} and {}", first + 70))?;
    std::fs::write(&file, port.to_string())?;
    Ok(port)
}

fn find_bindir() -> Option<PathBuf> {
    if let Ok(path) = which("initdb") {
        // Debian's /usr/bin wrappers are not the server binaries; follow symlinks to the real dir.
        let real = std::fs::canonicalize(&path).unwrap_or(path);
        if let Some(dir) = real.parent()
            && dir.join("postgres").exists()
            && dir.join("pg_ctl").exists()
        {
            return Some(dir.to_path_buf());
        }
    }
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").exists())
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, bin)| bin)
}

fn which(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").context("PATH is not set")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .context("not found")
}

pub fn apt_available() -> bool {
    is_root() && succeeds("apt-get", &["--version"])
}

pub fn apt_install(packages: &[&str]) -> Result<()> {
    println!("xtask: installing {}", packages.join(" "));
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get install")?;
    if status.success() {
        return Ok(());
    }
    // The package lists may be missing on a fresh machine.
    run(Command::new("apt-get").args(["update", "-q"]))?;
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?;
    if !status.success() {
        bail!("apt-get install {} failed", packages.join(" "));
    }
    Ok(())
}

/// The directory of `initdb`, `pg_ctl` and `postgres`, installing the server when possible.
fn ensure_server() -> Result<PathBuf> {
    if let Some(dir) = find_bindir() {
        return Ok(dir);
    }
    if apt_available() {
        apt_install(&["postgresql", "postgresql-contrib"])?;
        if let Some(dir) = find_bindir() {
            return Ok(dir);
        }
    }
    bail!(
        "no Postgres server found (looked for initdb on PATH and in /usr/lib/postgresql/*/bin). Install \
         Postgres ≥ 15 with contrib and pgvector (Debian/Ubuntu: postgresql postgresql-contrib; macOS: \
         `brew install postgresql pgvector`), or set DATABASE_URL to a server that has them"
    )
}

fn pg_config(bindir: &Path, flag: &str) -> Result<String> {
    let out = run(Command::new(bindir.join("pg_config")).arg(flag))?;
    Ok(out.trim().to_owned())
}

fn major_version(bindir: &Path) -> Result<String> {
    // "PostgreSQL 15.18 (Debian ...)" -> "15"
    let version = pg_config(bindir, "--version")?;
    version
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').next())
        .map(str::to_owned)
        .context("could not read the Postgres version")
}

fn missing_extensions(sharedir: &Path) -> Vec<&'static str> {
    EXTENSIONS
        .into_iter()
        .filter(|e| !sharedir.join(format!("extension/{e}.control")).exists())
        .collect()
}

/// Installs contrib and pgvector when their control files are missing: the cheap routes first
/// (a distribution package), then pgvector built from Debian trixie's source package.
fn ensure_extensions(bindir: &Path) -> Result<()> {
    let sharedir = PathBuf::from(pg_config(bindir, "--sharedir")?);
    let missing = missing_extensions(&sharedir);
    if missing.is_empty() {
        return Ok(());
    }
    let major = major_version(bindir)?;
    if !apt_available() {
        bail!(
            "Postgres {major} lacks the extension(s) {missing:?}. Install them (Debian/Ubuntu with PGDG: \
             postgresql-{major}-pgvector and postgresql-contrib; macOS: `brew install pgvector`) or set \
             DATABASE_URL to a server that has vector, pgcrypto and btree_gin"
        );
    }
    if missing.iter().any(|e| *e != "vector") {
        apt_install(&[&format!("postgresql-contrib-{major}")])
            .or_else(|_| apt_install(&["postgresql-contrib"]))?;
    }
    if missing_extensions(&sharedir).contains(&"vector")
        && apt_install(&[&format!("postgresql-{major}-pgvector")]).is_err()
    {
        build_pgvector(bindir, &major)?;
    }
    let still = missing_extensions(&sharedir);
    if !still.is_empty() {
        bail!("the extension(s) {still:?} are still missing after installation");
    }
    Ok(())
}

/// pgvector from Debian trixie's source package, built against this server's headers.
fn build_pgvector(bindir: &Path, major: &str) -> Result<()> {
    println!("xtask: building pgvector from Debian's source package (bookworm does not ship it)");
    apt_install(&[&format!("postgresql-server-dev-{major}"), "build-essential"])?;
    let sources = "/etc/apt/sources.list.d/zoark-trixie-src.sources";
    if !Path::new(sources).exists() {
        let (uris, keyring) = debian_source_entry()?;
        std::fs::write(
            sources,
            format!("Types: deb-src\nURIs: {uris}\nSuites: trixie\nComponents: main\nSigned-By: {keyring}\n"),
        )
        .with_context(|| format!("writing {sources}"))?;
    }
    run(Command::new("apt-get").args(["update", "-q"]))?;
    let work = std::env::temp_dir().join(format!("zoark-pgvector-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    run(Command::new("apt-get")
        .args(["source", "--download-only", "pgvector"])
        .current_dir(&work))?;
    let tarball = std::fs::read_dir(&work)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_str().is_some_and(|s| s.contains(".orig.tar")))
        .context("apt-get source did not download pgvector's orig tarball")?;
    run(Command::new("tar")
        .arg("xf")
        .arg(&tarball)
        .current_dir(&work))?;
    let src = std::fs::read_dir(&work)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("pgvector"))
        })
        .context("pgvector's source directory not found")?;
    let pg_config = format!("PG_CONFIG={}", bindir.join("pg_config").display());
    run(Command::new("make").arg(&pg_config).current_dir(&src))?;
    run(Command::new("make")
        .arg("install")
        .arg(&pg_config)
        .current_dir(&src))?;
    let _ = std::fs::remove_dir_all(&work);
    println!("xtask: pgvector installed");
    Ok(())
}

/// URIs and Signed-By of the machine's own Debian entry, so no mirror is hard-coded.
fn debian_source_entry() -> Result<(String, String)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("/etc/apt/sources.list.d")?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sources"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            };
            if let (Some(uris), Some(keyring)) = (field("URIs:"), field("Signed-By:"))
                && uris.contains("debian.org/debian")
                && !uris.contains("security")
            {
                return Ok((uris, keyring));
            }
        }
    }
    bail!("no Debian entry with URIs and Signed-By in /etc/apt/sources.list.d/*.sources")
}

#[cfg(test)]
mod tests {
    use super::strip_database;

    #[test]
    fn the_database_is_stripped_from_a_url() {
        assert_eq!(
            strip_database("postgres://u:p@h:5432/db?sslmode=require"),
            "postgres://u:p@h:5432"
        );
        assert_eq!(strip_database("postgres://u@h"), "postgres://u@h");
    }
}
