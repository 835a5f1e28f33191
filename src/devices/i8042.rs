//! The i8042 keyboard controller, ports 0x60 (data) and 0x64 (status/command).
//!
//! For now only its reset line is modelled (vm-superio's `I8042Device`): writing 0xFE to port
//! 0x64 pulses the CPU reset line, which mini-kvm treats as the guest asking to reboot: the
//! guest is stopped. The keyboard itself (scancodes, IRQ 1) is not modelled yet.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use vm_superio::{I8042Device, Trigger};

use super::bus::{GuestCpu, GuestStop, IoAction, PortIoDevice};

pub const I8042_DATA_PORT: u16 = 0x60;
pub const I8042_COMMAND_PORT: u16 = 0x64;

/// Records that the guest pulled the reset line.
#[derive(Clone, Default)]
struct ResetLine(Arc<AtomicBool>);

impl Trigger for ResetLine {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.store(true, Ordering::Relaxed);
        Ok(())
    }
}

pub struct I8042 {
    controller: I8042Device<ResetLine>,
    reset: ResetLine,
}

impl I8042 {
    pub fn new() -> I8042 {
        let reset = ResetLine::default();
        I8042 {
            controller: I8042Device::new(reset.clone()),
            reset,
        }
    }
}

impl Default for I8042 {
    fn default() -> Self {
        I8042::new()
    }
}

impl PortIoDevice for I8042 {
    fn name(&self) -> &'static str {
        "i8042"
    }

    fn read(&mut self, port: u16, data: &mut [u8]) {
        let value = self.controller.read((port - I8042_DATA_PORT) as u8);
        data.fill(0);
        data[0] = value;
    }

    fn write(&mut self, port: u16, data: &[u8], _cpu: &mut dyn GuestCpu) -> IoAction {
        let Some(&value) = data.first() else {
            return IoAction::Continue;
        };
        // The only error vm-superio can return here is from our trigger, which cannot fail.
        let _ = self.controller.write((port - I8042_DATA_PORT) as u8, value);
        if self.reset.0.swap(false, Ordering::Relaxed) {
            IoAction::Stop(GuestStop::Reboot)
        } else {
            IoAction::Continue
        }
    }
}
