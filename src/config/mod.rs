//! The config center's request rules, without IO: parameter checks as Nacos's `ParamUtils`
//! makes them ([`params`]), and the long-poll listener protocol with the registry of held polls
//! ([`listen`]). The replicated state (configs, history, namespaces) is the `config` domain of
//! the state machine (`consensus::config`); the HTTP surface is `api::config`.

pub mod listen;
pub mod params;
