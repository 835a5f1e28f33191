//! The hypercall interface on port 0x500 (docs/hypercall-abi.md).
//!
//! A guest writes a call number to port 0x500 with its arguments in RBX, RCX and RSI. On the bus,
//! port 0x500 is only a doorbell ([`HypercallDoorbell`]): it tells the vCPU "a call, number N".
//! The vCPU reads the arguments from its registers, decodes them into a typed request
//! ([`abi::Request`]) and runs it with its [`HypercallHandler`], which works on guest memory and
//! the console; the result goes back into RAX. So neither the bus nor any device ever sees a vCPU.

pub mod abi;
pub mod handler;

pub use abi::{CallRegisters, Request};
pub use handler::{CallOutcome, HypercallHandler, PageTables};

use super::bus::{BusDevice, IoAction};

/// The port the doorbell sits on.
pub const HYPERCALL_PORT: u16 = 0x500;

/// Port 0x500 on the bus: a write rings the doorbell with the call number (AL).
#[derive(Default)]
pub struct HypercallDoorbell;

impl BusDevice for HypercallDoorbell {
    fn name(&self) -> &'static str {
        "hypercall"
    }

    /// Nothing is kept between accesses.
    fn save_state(&self) -> crate::devices::DeviceState {
        crate::devices::DeviceState::Stateless
    }

    fn restore_state(&mut self, _state: &serde_json::Value) -> Result<(), String> {
        Ok(())
    }

    /// Nothing to read from port 0x500: all ones, like an unclaimed port.
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) -> IoAction {
        // The call number is AL, whatever the width of the `out`.
        IoAction::Hypercall(data.first().copied().unwrap_or(0xff))
    }
}
