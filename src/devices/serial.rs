//! A 16550 UART (COM1, ports 0x3f8–0x3ff), modelled by vm-superio.
//!
//! Writing the transmit register prints a byte on the guest's console. Reading the receive buffer
//! returns guest input: before each read we move whatever stdin has ready into the UART's FIFO,
//! so a guest polling the line status register sees "data ready" when a byte has arrived.
//! No interrupt line is wired yet (IRQ 4 comes with the interrupt controller).

use vm_superio::{Serial, Trigger};

use super::bus::{GuestCpu, IoAction, PortIoDevice};
use crate::console::{GuestInput, GuestOutput};

pub const COM1_PORT: u16 = 0x3f8;
pub const COM1_LAST_PORT: u16 = 0x3ff;

/// The UART's interrupt line, not connected to an interrupt controller (yet).
pub struct UnconnectedIrq;

impl Trigger for UnconnectedIrq {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        Ok(())
    }
}

pub struct Uart {
    serial: Serial<UnconnectedIrq, vm_superio::serial::NoEvents, GuestOutput>,
    input: GuestInput,
}

impl Uart {
    pub fn new(output: GuestOutput, input: GuestInput) -> Uart {
        Uart {
            serial: Serial::new(UnconnectedIrq, output),
            input,
        }
    }

    /// Moves input bytes that are already waiting into the UART's receive FIFO.
    fn receive_waiting_input(&mut self) {
        let mut chunk = [0u8; 64];
        let room = self.serial.fifo_capacity().min(chunk.len());
        if room == 0 {
            return;
        }
        let n = self.input.try_read(&mut chunk[..room]);
        if n > 0 {
            // Cannot fail: we asked for no more than the FIFO's free space, and our trigger
            // cannot fail.
            let _ = self.serial.enqueue_raw_bytes(&chunk[..n]);
        }
    }
}

impl PortIoDevice for Uart {
    fn name(&self) -> &'static str {
        "uart"
    }

    fn read(&mut self, port: u16, data: &mut [u8]) {
        self.receive_waiting_input();
        data.fill(0);
        data[0] = self.serial.read((port - COM1_PORT) as u8);
    }

    fn write(&mut self, port: u16, data: &[u8], _cpu: &mut dyn GuestCpu) -> IoAction {
        if let Some(&value) = data.first() {
            // Errors are only possible from the output writer or the trigger, neither of which
            // fails (GuestOutput drops output it cannot deliver).
            let _ = self.serial.write((port - COM1_PORT) as u8, value);
        }
        IoAction::Continue
    }

    fn flush(&mut self) {
        self.serial.writer().flush();
    }
}
