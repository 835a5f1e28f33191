//! A device's state in a snapshot (src/vmm/snapshot/, docs/snapshot.md): what a device model
//! holds that the guest could see change if it were lost (a register the guest wrote, a byte
//! waiting in a FIFO), as a JSON value a person can read. The VMM saves and restores it by the
//! device's name; the device alone knows its fields.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// What [`BusDevice::save_state`](super::BusDevice::save_state) answers.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceState {
    /// The device keeps nothing between accesses (the debug console, the doorbell): nothing to
    /// save, and a restored one is as good as new.
    Stateless,
    /// The device's state, for [`BusDevice::restore_state`](super::BusDevice::restore_state).
    Saved(serde_json::Value),
    /// The device cannot be saved yet: a snapshot of a guest that has it is refused.
    NotSaved,
}

impl DeviceState {
    /// A device's state struct as a [`DeviceState::Saved`] value.
    pub fn of(state: &impl Serialize) -> DeviceState {
        // A struct of numbers, strings and lists always serializes.
        DeviceState::Saved(serde_json::to_value(state).unwrap_or(serde_json::Value::Null))
    }
}

/// Reads a device's state struct back from its JSON value; the error names what was wrong.
pub fn parse_state<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, String> {
    T::deserialize(value).map_err(|error| error.to_string())
}
