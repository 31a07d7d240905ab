//! [`Env`]: what the engine needs from its application.

use std::sync::Arc;

use super::shutdown::ShutdownSignal;
use crate::hub::Hub;
use crate::settings::Settings;

/// What every connection of an application shares: its settings, the
/// server's shutdown signal and the groups hub.
#[derive(Clone)]
pub(crate) struct Env {
    pub settings: Arc<Settings>,
    pub shutdown: ShutdownSignal,
    pub hub: Arc<Hub>,
}
