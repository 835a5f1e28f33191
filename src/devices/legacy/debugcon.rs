//! The debug console on port 0xe9 (the Bochs/QEMU convention): every byte written is printed.

use crate::console::GuestOutput;
use crate::devices::bus::{BusDevice, BusRange, IoAction};

pub const DEBUGCON_PORT: BusRange = BusRange::new(0xe9, 1);

pub struct DebugConsole {
    output: GuestOutput,
}

impl DebugConsole {
    pub fn new(output: GuestOutput) -> DebugConsole {
        DebugConsole { output }
    }
}

impl BusDevice for DebugConsole {
    fn name(&self) -> &'static str {
        "debugcon"
    }

    /// Nothing is kept between accesses.
    fn save_state(&self) -> crate::devices::DeviceState {
        crate::devices::DeviceState::Stateless
    }

    fn restore_state(&mut self, _state: &serde_json::Value) -> Result<(), String> {
        Ok(())
    }

    /// Reading the port returns 0xe9: that is how a guest detects the debug console.
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xe9);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) -> IoAction {
        // An `out %ax` prints only its low byte, as on QEMU.
        if let Some(&byte) = data.first() {
            self.output.write_bytes(&[byte]);
        }
        IoAction::Continue
    }

    /// Output only: every write may wait on KVM's coalesced-I/O ring.
    fn coalesced_offsets(&self) -> &'static [u64] {
        &[0]
    }
}
