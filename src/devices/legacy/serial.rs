//! A 16550 UART (COM1, ports 0x3f8–0x3ff, IRQ 4), modelled by vm-superio.
//!
//! Writing the transmit register prints a byte on the guest's console. Reading the receive buffer
//! returns guest input. Input reaches the UART's receive FIFO in one of two ways:
//!
//! - **Polling guests** (the usual case, and every guest without an interrupt controller): before
//!   each guest read, whatever stdin has ready is moved into the FIFO, so the line status register
//!   shows "data ready" once a byte has arrived.
//! - **Interrupt-driven guests**: when the guest enables the "received data available" interrupt
//!   (IER bit 0) and the line is connected, an input thread starts. It waits for input (blocked,
//!   not polling) and for room in the FIFO, and moves bytes in; vm-superio then raises IRQ 4
//!   through our [`IrqLine`], so a guest waiting in `hlt` wakes up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;

use vm_superio::Serial;

use crate::console::{GuestInput, GuestOutput, InputWait};
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

type SerialModel = Serial<IrqLine, vm_superio::serial::NoEvents, GuestOutput>;

/// The UART's state, shared with its input thread.
struct Shared {
    serial: Mutex<SerialModel>,
    /// Signalled when the guest has read from the FIFO (there may be room again) or the device
    /// is going away.
    room: Condvar,
    /// The UART has been dropped: the input thread ends.
    closed: AtomicBool,
}

fn lock(shared: &Shared) -> MutexGuard<'_, SerialModel> {
    shared
        .serial
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub struct Uart {
    shared: Arc<Shared>,
    input: GuestInput,
    irq: IrqLine,
    /// The input thread has started: from then on it alone fills the FIFO.
    input_thread: bool,
}

impl Uart {
    pub fn new(output: GuestOutput, input: GuestInput, irq: IrqLine) -> Uart {
        Uart {
            shared: Arc::new(Shared {
                serial: Mutex::new(Serial::new(irq.clone(), output)),
                room: Condvar::new(),
                closed: AtomicBool::new(false),
            }),
            input,
            irq,
            input_thread: false,
        }
    }

    /// Moves input bytes that are already waiting into the UART's receive FIFO (polling guests).
    fn receive_waiting_input(&mut self) {
        if self.input_thread {
            return;
        }
        let mut serial = lock(&self.shared);
        let mut chunk = [0u8; 64];
        let room = serial.fifo_capacity().min(chunk.len());
        if room == 0 {
            return;
        }
        let n = self.input.try_read(&mut chunk[..room]);
        if n > 0 {
            // Cannot fail: we asked for no more than the FIFO's free space, and our trigger
            // cannot fail.
            let _ = serial.enqueue_raw_bytes(&chunk[..n]);
        }
    }

    /// Starts the thread that feeds the FIFO as input arrives (interrupt-driven guests).
    fn start_input_thread(&mut self) {
        let shared = Arc::clone(&self.shared);
        let input = self.input.clone();
        let spawned = thread::Builder::new()
            .name("uart-input".into())
            .spawn(move || {
                let mut chunk = [0u8; 64];
                loop {
                    // Wait for room first, so that every byte taken from the input fits.
                    let room = {
                        let mut serial = lock(&shared);
                        while serial.fifo_capacity() == 0 && !shared.closed.load(Ordering::Acquire)
                        {
                            serial = shared
                                .room
                                .wait(serial)
                                .unwrap_or_else(|poisoned| poisoned.into_inner());
                        }
                        serial.fifo_capacity().min(chunk.len())
                    };
                    if shared.closed.load(Ordering::Acquire) {
                        return;
                    }
                    match input.read_blocking(&mut chunk[..room]) {
                        InputWait::Read(n) => {
                            // Raises IRQ 4 if the guest enabled the interrupt.
                            let _ = lock(&shared).enqueue_raw_bytes(&chunk[..n]);
                        }
                        InputWait::EndOfInput | InputWait::Cancelled => return,
                    }
                }
            });
        // Without the thread the guest still gets input when it reads (polling).
        self.input_thread = spawned.is_ok();
    }
}

impl Drop for Uart {
    fn drop(&mut self) {
        // Wake the input thread if it waits for room, so it sees that the UART is gone.
        self.shared.closed.store(true, Ordering::Release);
        self.shared.room.notify_all();
    }
}

impl BusDevice for Uart {
    fn name(&self) -> &'static str {
        "uart"
    }

    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.receive_waiting_input();
        data.fill(0);
        data[0] = lock(&self.shared).read(offset as u8);
        self.shared.room.notify_all();
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
        if enables_receive_interrupt && self.irq.is_connected() && !self.input_thread {
            // Offset 1 is the divisor latch's high byte while LCR bit 7 is set, not the IER.
            let divisor_latch = serial.state().line_control & 0x80 != 0;
            drop(serial);
            if !divisor_latch {
                self.start_input_thread();
            }
        }
        IoAction::Continue
    }

    fn coalesced_offsets(&self) -> &'static [u64] {
        &[THR]
    }

    fn flush(&mut self) {
        lock(&self.shared).writer().flush();
    }
}
