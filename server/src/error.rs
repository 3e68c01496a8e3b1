use std::io;
use std::net::SocketAddr;

/// What stops a server or one of its workers from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },

    #[error("cannot start the monoio runtime: {0}")]
    Runtime(io::Error),

    #[error("cannot start worker {index}: {source}")]
    SpawnWorker { index: u32, source: io::Error },

    #[error("cannot make a private directory for the workers' notify sockets (TMPDIR): {0}")]
    NotifyDir(io::Error),

    #[error("cannot make worker {index}'s notify socket: {source}")]
    NotifyLine { index: u32, source: io::Error },

    #[error("cannot install the signal handlers: {0}")]
    Signals(io::Error),

    #[error("accepting connections failed: {0}")]
    Accept(io::Error),

    #[error(transparent)]
    Ring(#[from] ringbuf::Error),
}
