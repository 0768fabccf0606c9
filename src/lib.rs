//! audithound: a streaming analyzer for Kubernetes API-server audit logs.
//!
//! The pipeline (see ARCHITECTURE.md): `source` reads records, `event` decodes them into
//! borrowed `AuditEvent`s, `engine` runs decode/detect workers and re-sequences their output,
//! `rules` holds the declarative detectors, `alert` shapes findings, `sink` delivers them and
//! `metrics` counts everything.

pub mod alert;
pub mod config;
pub mod detect;
pub mod engine;
pub mod eval;
pub mod event;
pub mod hunt;
pub mod incident;
pub mod keyed;
pub mod metrics;
pub mod reload;
pub mod report;
pub mod reputation;
pub mod revocation;
pub mod route;
pub mod rules;
pub mod service;
pub mod settings;
pub mod sink;
pub mod source;
#[cfg(feature = "synth")]
pub mod synth;
