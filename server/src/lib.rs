//! ringcast-server: maps every camera's ring and serves its frames to viewers over WebSocket and
//! MJPEG-over-HTTP; several worker processes share one port.
//!
//! A worker ([`worker`]) is a complete server on one monoio thread: it follows each ring once
//! ([`hub`]), shares every frame with all of its viewers ([`viewer`]), takes frames from remote
//! cameras ([`ingest`]) and answers the small routes ([`routes`]) and the web viewer ([`web`]).
//! [`supervisor`] runs N of them; [`notify`] tells systemd that they run.

pub mod cli;
pub mod error;
pub mod http;
pub mod hub;
pub mod ingest;
pub mod metrics;
pub mod notify;
pub mod routes;
pub mod supervisor;
pub mod viewer;
pub mod web;
pub mod websocket;
pub mod worker;

pub use cli::{Args, WorkerConfig};
pub use error::ServerError;
