//! The bottom layer: small helpers every other module may use and that use nothing of the agent's
//! own. Django's timestamp text, the config's problem list, value parsers and ranges, reading its
//! TOML past mistakes, secrets that never print, and a small random generator.

pub(crate) mod backoff;
pub(crate) mod credentials;
pub(crate) mod deadline;
pub(crate) mod deserialize;
pub mod django_time;
pub mod escape;
pub mod files;
pub mod instance_lock;
pub mod logging;
pub mod open_files;
pub(crate) mod problems;
pub(crate) mod random;
pub(crate) mod ranges;
pub mod redact;
pub(crate) mod secret_settings;
pub mod service_manager;
pub(crate) mod unit_sandbox;
