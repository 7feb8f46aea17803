//! The command line: clap's subcommands and flags (each flag with its `WSS_SIDECAR_*`
//! variable), checked and translated into the configuration types their components own
//! ([`crate::proxy::ProxyConfig`], [`crate::injector::Config`], [`crate::acme::AcmeConfig`],
//! ...). Nothing outside `main` and the demo depends on this module.

mod acme;
mod cli;
mod client;
mod inbound;
mod injector;
mod keepalive;
mod lame_duck;
mod parse;
mod proxy;
mod websocket;

pub use acme::{AcmeArgs, LETSENCRYPT, LETSENCRYPT_STAGING};
pub use cli::{Cli, Command, DemoArgs, EchoArgs, LameDuckArgs, LogArgs};
pub use client::{ClientArgs, ClientAuth};
pub use injector::{InjectorArgs, proxy_flags};
pub use parse::{parse_duration, parse_optional_duration};
pub use proxy::{AdminListen, OptionalDuration, ProxyArgs, proxy_command};

/// A configuration problem found at start-up. The message names the flag.
#[derive(Debug, thiserror::Error)]
#[error("{flag}: {message}")]
pub struct ConfigError {
    /// The flag at fault, as the user typed it (`--cert-dir`).
    pub flag: &'static str,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(flag: &'static str, message: impl Into<String>) -> Self {
        Self {
            flag,
            message: message.into(),
        }
    }
}
