//! zoark-core: what every Zoark process shares — typed settings, telemetry, cryptography, domain
//! types, the email providers' OAuth clients and database access (plain sqlx functions over
//! `&mut PgConnection`, and [`db::migrate_all`]).

pub mod access;
pub mod agents;
pub mod crypto;
pub mod db;
pub mod files;
pub mod identity;
pub mod knowledge;
pub mod oauth;
pub mod outbound;
pub mod process;
pub mod schedule;
pub mod settings;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
pub mod webhooks;

pub use settings::Settings;
