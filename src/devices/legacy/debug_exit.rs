//! QEMU's `isa-debug-exit` device at port 0xf4 (as QEMU is usually given it:
//! `-device isa-debug-exit,iobase=0xf4,iosize=0x04`): writing a value V stops the guest with
//! exit status (V << 1) | 1. It lets one test kernel report its result the same way under
//! mini-kvm and under QEMU (the benchmarks compare the two).

use crate::devices::bus::{BusDevice, BusRange, GuestStop, IoAction};

pub const DEBUG_EXIT_PORTS: BusRange = BusRange::new(0xf4, 4);

#[derive(Default)]
pub struct DebugExit;

impl DebugExit {
    /// QEMU's status for a written value: always odd, so that 0 still means "not from the guest".
    pub fn status(value: u32) -> u8 {
        ((value << 1) | 1) as u8
    }
}

impl BusDevice for DebugExit {
    fn name(&self) -> &'static str {
        "debug-exit"
    }

    /// Nothing is kept between accesses.
    fn save_state(&self) -> crate::devices::DeviceState {
        crate::devices::DeviceState::Stateless
    }

    fn restore_state(&mut self, _state: &serde_json::Value) -> Result<(), String> {
        Ok(())
    }

    /// Nothing to read: all ones, as on QEMU.
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) -> IoAction {
        let mut value = [0u8; 4];
        let len = data.len().min(4);
        value[..len].copy_from_slice(&data[..len]);
        IoAction::Stop(GuestStop::Exit(DebugExit::status(u32::from_le_bytes(
            value,
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_twice_the_value_plus_one() {
        assert_eq!(DebugExit::status(0), 1);
        assert_eq!(DebugExit::status(0x10), 0x21);
        assert_eq!(DebugExit::status(0x7f), 0xff);
        // Only the low 8 bits reach the process status, as with QEMU.
        assert_eq!(DebugExit::status(0x80), 1);
    }
}
