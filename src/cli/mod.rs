//! The command line: clap's flags (`args`), the one bridge from them into the checked
//! settings of `crate::config` (`settings`), and the offline commands `predict` and
//! `models`. Settings flow one way: `args` -> `settings` -> `crate::config`; nothing below
//! the command line imports clap, and nothing outside it reads the flags' environment.

mod args;
mod models;
mod predict;
mod settings;

pub use args::{
    default_port, parse_bytes, platform_port, Cli, Command, LogFormat, ModelsArgs, PredictArgs,
    Progress, RuntimeArgs, ServeArgs, DEFAULT_PORT,
};
pub use models::models;
pub use predict::{predict, Summary};
#[cfg(test)]
pub(crate) use settings::for_tests;
