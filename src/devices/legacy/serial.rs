//! A 16550 UART (COM1, ports 0x3f8–0x3ff, IRQ 4), modelled by vm-superio.
//!
//! Writing the transmit register prints a byte on the guest's console. Reading the receive buffer
//! returns guest input. Input reaches the UART's receive FIFO in one of two ways:
//!
//! - **Polling guests** (the usual case, and every guest without an interrupt controller): before
//!   each guest read, whatever stdin has ready is moved into the FIFO, so the line status register
//!   shows "data ready" once a byte has arrived.
//! - **Interrupt-driven guests**: when the guest enables the "received data available" interrupt
//!   (IER bit 0) and the line is connected, the UART becomes a listener of the input
//!   (src/console/input.rs): the VM's event loop hands it bytes as they arrive, as many as the
//!   FIFO has room for, and vm-superio raises IRQ 4 through our [`IrqLine`], so a guest waiting
//!   in `hlt` wakes up. What does not fit waits in the input, which then stops reading stdin.

use std::sync::{Arc, Mutex, MutexGuard};

use vm_superio::Serial;

use crate::arch::x86::acpi::AcpiId;
use crate::console::{GuestInput, GuestOutput, InputListener};
use crate::devices::bus::{BusDevice, BusRange, IoAction};
use crate::devices::irq::IrqLine;

/// COM1: eight ports from 0x3f8, and IRQ 4, as on every PC.
pub const COM1_PORTS: BusRange = BusRange::new(0x3f8, 8);
pub const COM1_IRQ: u32 = 4;
/// The transmit register (THR): output only, so its writes may be coalesced.
const THR: u64 = 0;

/// Interrupt enable register offset and its "received data available" bit.
const IER: u8 = 1;
const IER_RECEIVED_DATA: u8 = 0x01;
/// Line control register bit 7: offsets 0 and 1 are the divisor latch.
const LCR_DIVISOR_LATCH: u8 = 0x80;

type SerialModel = Serial<IrqLine, vm_superio::serial::NoEvents, GuestOutput>;

/// The UART's state, shared with the input's listener.
struct Shared {
    serial: Mutex<SerialModel>,
}

fn lock(shared: &Shared) -> MutexGuard<'_, SerialModel> {
    shared
        .serial
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Moves input bytes that are already waiting into the receive FIFO, as many as fit.
    fn receive_waiting_input(&self, input: &GuestInput) {
        let mut serial = lock(self);
        let mut chunk = [0u8; 64];
        let room = serial.fifo_capacity().min(chunk.len());
        if room == 0 {
            return;
        }
        let n = input.try_read(&mut chunk[..room]);
        if n > 0 {
            // Cannot fail: we asked for no more than the FIFO's free space, and our trigger
            // cannot fail. With IER bit 0 set, this raises IRQ 4.
            let _ = serial.enqueue_raw_bytes(&chunk[..n]);
        }
    }
}

/// Interrupt-driven input: bytes arrive without the guest asking.
struct UartInput(Arc<Shared>);

impl InputListener for UartInput {
    fn input_ready(&self, input: &GuestInput) {
        self.0.receive_waiting_input(input);
    }
}

pub struct Uart {
    shared: Arc<Shared>,
    input: GuestInput,
    irq: IrqLine,
    /// The UART listens to the input (interrupt-driven input has been enabled).
    listening: bool,
}

impl Uart {
    pub fn new(output: GuestOutput, input: GuestInput, irq: IrqLine) -> Uart {
        Uart {
            shared: Arc::new(Shared {
                serial: Mutex::new(Serial::new(irq.clone(), output)),
            }),
            input,
            irq,
            listening: false,
        }
    }
}

impl Uart {
    /// Interrupt-driven input: from now on the input hands the UART bytes as they arrive.
    fn listen(&mut self) {
        if self.irq.is_connected() && !self.listening {
            self.listening = true;
            self.input
                .add_listener(Arc::new(UartInput(Arc::clone(&self.shared))));
        }
    }
}

/// What a snapshot keeps of the UART: the 16550's registers, by their names in its data sheet,
/// and the received bytes the guest has not read yet.
#[derive(serde::Serialize, serde::Deserialize)]
struct UartState {
    divisor_latch_low: u8,
    divisor_latch_high: u8,
    interrupt_enable: u8,
    interrupt_identification: u8,
    line_control: u8,
    line_status: u8,
    modem_control: u8,
    modem_status: u8,
    scratch: u8,
    receive_fifo: Vec<u8>,
}

impl BusDevice for Uart {
    fn name(&self) -> &'static str {
        "uart"
    }

    /// A 16550-compatible UART.
    fn acpi_id(&self) -> Option<AcpiId> {
        Some(AcpiId {
            name: "COM1",
            hid: "PNP0501",
        })
    }

    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // Polling guests see input that has arrived; interrupt-driven ones get the bytes that
        // did not fit in the FIFO before.
        self.shared.receive_waiting_input(&self.input);
        data.fill(0);
        data[0] = lock(&self.shared).read(offset as u8);
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> IoAction {
        let Some(&value) = data.first() else {
            return IoAction::Continue;
        };
        let offset = offset as u8;
        // Errors are only possible from the output writer or the trigger, neither of which
        // fails (GuestOutput drops output it cannot deliver).
        let mut serial = lock(&self.shared);
        let _ = serial.write(offset, value);
        let enables_receive_interrupt = offset == IER && value & IER_RECEIVED_DATA != 0;
        // Offset 1 is the divisor latch's high byte while LCR bit 7 is set, not the IER.
        let divisor_latch = serial.state().line_control & LCR_DIVISOR_LATCH != 0;
        drop(serial);
        if enables_receive_interrupt && !divisor_latch {
            self.listen();
        }
        IoAction::Continue
    }

    /// The 16550's registers and the bytes waiting in its receive FIFO (vm-superio's state),
    /// field by field.
    fn save_state(&self) -> crate::devices::DeviceState {
        let serial = lock(&self.shared).state();
        crate::devices::DeviceState::of(&UartState {
            divisor_latch_low: serial.baud_divisor_low,
            divisor_latch_high: serial.baud_divisor_high,
            interrupt_enable: serial.interrupt_enable,
            interrupt_identification: serial.interrupt_identification,
            line_control: serial.line_control,
            line_status: serial.line_status,
            modem_control: serial.modem_control,
            modem_status: serial.modem_status,
            scratch: serial.scratch,
            receive_fifo: serial.in_buffer,
        })
    }

    /// A new model from the saved registers; a guest that had enabled the receive interrupt
    /// gets its input as interrupts again.
    fn restore_state(&mut self, state: &serde_json::Value) -> Result<(), String> {
        let state: UartState = crate::devices::state::parse_state(state)?;
        let serial_state = vm_superio::serial::SerialState {
            baud_divisor_low: state.divisor_latch_low,
            baud_divisor_high: state.divisor_latch_high,
            interrupt_enable: state.interrupt_enable,
            interrupt_identification: state.interrupt_identification,
            line_control: state.line_control,
            line_status: state.line_status,
            modem_control: state.modem_control,
            modem_status: state.modem_status,
            scratch: state.scratch,
            in_buffer: state.receive_fifo,
        };
        let mut serial = lock(&self.shared);
        let output = serial.writer().clone();
        *serial = Serial::from_state(
            &serial_state,
            self.irq.clone(),
            vm_superio::serial::NoEvents,
            output,
        )
        .map_err(|error| format!("{error:?}"))?;
        drop(serial);
        if state.interrupt_enable & IER_RECEIVED_DATA != 0 {
            self.listen();
        }
        Ok(())
    }

    fn coalesced_offsets(&self) -> &'static [u64] {
        &[THR]
    }

    fn flush(&mut self) {
        lock(&self.shared).writer().flush();
    }
}
