//! The debug console on port 0xe9 (the Bochs/QEMU convention): every byte written is printed.

use super::bus::{GuestCpu, IoAction, PortIoDevice};
use crate::console::GuestOutput;

pub const DEBUGCON_PORT: u16 = 0xe9;

pub struct DebugConsole {
    output: GuestOutput,
}

impl DebugConsole {
    pub fn new(output: GuestOutput) -> DebugConsole {
        DebugConsole { output }
    }
}

impl PortIoDevice for DebugConsole {
    fn name(&self) -> &'static str {
        "debugcon"
    }

    /// Reading the port returns 0xe9: that is how a guest detects the debug console.
    fn read(&mut self, _port: u16, data: &mut [u8]) {
        data.fill(DEBUGCON_PORT as u8);
    }

    fn write(&mut self, _port: u16, data: &[u8], _cpu: &mut dyn GuestCpu) -> IoAction {
        // An `out %ax` prints only its low byte, as on QEMU.
        if let Some(&byte) = data.first() {
            self.output.write_bytes(&[byte]);
        }
        IoAction::Continue
    }
}
