//! The i8042 keyboard controller: ports 0x60 (data) and 0x64 (status / command), IRQ 1.
//!
//! The guest's input bytes (stdin) become key presses: [`KeyboardEncoder`] turns them into set-1
//! scancodes, make and break, which the guest reads one at a time from port 0x60. Status bit 0
//! ("output buffer full") tells it a byte is waiting; with the keyboard interrupt enabled
//! (command byte bit 0, on at reset here as a BIOS would leave it) each byte that reaches the
//! output buffer raises IRQ 1.
//!
//! **Who gets stdin?** The keyboard takes the guest's input from the guest's first access to the
//! controller on: it becomes a listener of the input (src/console/input.rs), so the VM's event
//! loop hands it what arrives; it encodes the bytes and raises IRQ 1, which wakes a guest halted
//! in `hlt`. It takes input only while fewer than [`QUEUE_LOW`] scancodes wait: a guest that
//! stops reading the keyboard holds its input back instead of growing the queue. A guest that
//! never touches the keyboard leaves its input to the UART and the hypercalls.
//!
//! **End of input.** A PC keyboard never ends, but stdin does (a pipe, a file, Ctrl-D in the
//! `--tui` view). The controller shows it with the PC/AT keyboard lock: status bit 4 ("keyboard
//! not inhibited") drops to 0 once the input has ended *and* the guest has read every scancode,
//! and IRQ 1 fires then (if nothing is left to read) so that a guest waiting in `hlt` looks.
//! A driver that ignores bit 4 (most do) sees a keyboard that stays silent.
//!
//! Writing 0xFE to port 0x64 pulses the CPU reset line (so does clearing bit 0 of the output port
//! through command 0xD1): mini-kvm stops the guest as a reboot.
//!
//! Simplifications: no mouse port (its commands are accepted and ignored), no typematic repeat,
//! and disabling the keyboard interface (0xAD) does not hold keys back.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use super::scancodes::KeyboardEncoder;
use crate::arch::x86::acpi::AcpiId;
use crate::console::{GuestInput, InputListener};
use crate::devices::bus::{BusDevice, BusRange, GuestStop, IoAction};
use crate::devices::irq::IrqLine;

/// The data port (offset 0) and the status/command port (offset 4), with 0x61-0x63 between them
/// belonging to other devices (0x61 is the PC speaker gate): the controller is attached in two
/// pieces that share one offset space.
pub const I8042_DATA_PORT: BusRange = BusRange::new(0x60, 1);
pub const I8042_COMMAND_PORT: BusRange = BusRange::new(0x64, 1);
pub const DATA: u64 = 0;
pub const COMMAND: u64 = 4;
/// IRQ 1, the keyboard's line on every PC.
pub const KEYBOARD_IRQ: u32 = 1;

/// Status register bits.
const STATUS_OUTPUT_FULL: u8 = 0x01;
const STATUS_SYSTEM_FLAG: u8 = 0x04; // set once the controller passed its self-test
const STATUS_LAST_WAS_COMMAND: u8 = 0x08;
const STATUS_NOT_INHIBITED: u8 = 0x10;

/// Command byte bits.
const COMMAND_KEYBOARD_INTERRUPT: u8 = 0x01;
/// At reset: keyboard interrupt on, system flag, scancode translation (set 1).
const DEFAULT_COMMAND_BYTE: u8 = 0x45;

/// The keyboard takes more input only while fewer scancodes than this wait for the guest.
const QUEUE_LOW: usize = 64;
/// Input bytes encoded at a time (each becomes at most 6 scancodes: Shift or Ctrl around a key).
const INPUT_CHUNK: usize = 32;
/// The most scancodes one input byte becomes (Shift or Ctrl, make and break, Shift's break).
const MAX_SCANCODES_PER_BYTE: usize = 6;
/// The most bytes that wait for the guest: 268. Input alone stays within it: it is taken only
/// while fewer than QUEUE_LOW wait, a chunk at a time (plus the two bytes of an escape sequence
/// held back from the chunk before). Replies to commands a guest sends without reading the
/// answers are what would fill it; past it they are dropped, as a real controller overruns,
/// instead of growing the VMM's memory without end.
const OUTPUT_CAPACITY: usize = QUEUE_LOW + (INPUT_CHUNK + 2) * MAX_SCANCODES_PER_BYTE;

/// Keyboard replies.
const ACK: u8 = 0xfa;
const SELF_TEST_PASSED: u8 = 0xaa;

/// A command whose data byte comes next on port 0x60.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Pending {
    WriteCommandByte,
    WriteOutputPort,
    /// A keyboard command with one argument (LEDs, typematic rate, scancode set).
    KeyboardArgument(u8),
}

/// The controller's state, shared with the input thread.
struct Controller {
    /// Bytes for the guest: scancodes and replies. The first one is "in the output buffer".
    output: VecDeque<u8>,
    /// What port 0x60 returns when the buffer is empty: the last byte read.
    last_read: u8,
    command_byte: u8,
    pending: Option<Pending>,
    last_was_command: bool,
    /// The guest's input has ended: once `output` is empty, the keyboard shows as locked.
    input_ended: bool,
    irq: IrqLine,
}

impl Controller {
    fn interrupts_enabled(&self) -> bool {
        self.command_byte & COMMAND_KEYBOARD_INTERRUPT != 0
    }

    /// Queues bytes for the guest; if the output buffer was empty, the first one is now in it.
    /// Bytes that do not fit in OUTPUT_CAPACITY are lost.
    fn push(&mut self, bytes: &[u8]) {
        let was_empty = self.output.is_empty();
        let room = OUTPUT_CAPACITY.saturating_sub(self.output.len());
        self.output.extend(&bytes[..bytes.len().min(room)]);
        if was_empty && !self.output.is_empty() && self.interrupts_enabled() {
            self.irq.raise();
        }
    }

    fn read_data(&mut self) -> u8 {
        if let Some(byte) = self.output.pop_front() {
            self.last_read = byte;
            // The next byte moves into the output buffer: another interrupt.
            if !self.output.is_empty() && self.interrupts_enabled() {
                self.irq.raise();
            }
        }
        self.last_read
    }

    fn status(&self) -> u8 {
        let mut status = STATUS_SYSTEM_FLAG;
        if !self.output.is_empty() {
            status |= STATUS_OUTPUT_FULL;
        }
        if !self.input_ended || !self.output.is_empty() {
            status |= STATUS_NOT_INHIBITED;
        }
        if self.last_was_command {
            status |= STATUS_LAST_WAS_COMMAND;
        }
        status
    }

    /// The input has ended (see the module comment). With scancodes still queued, reading the
    /// last one leaves the keyboard locked; with none, an interrupt tells the guest now.
    fn end_input(&mut self) {
        self.input_ended = true;
        if self.output.is_empty() && self.interrupts_enabled() {
            self.irq.raise();
        }
    }

    /// A controller command (port 0x64). Returns true when the guest pulled the reset line.
    fn command(&mut self, command: u8) -> bool {
        self.last_was_command = true;
        match command {
            0x20 => self.push(&[self.command_byte]),
            0x60 => self.pending = Some(Pending::WriteCommandByte),
            0xaa => self.push(&[0x55]), // controller self-test: passed
            0xab | 0xa9 => self.push(&[0x00]), // keyboard / mouse port test: no error
            0xd0 => self.push(&[0x03]), // output port: reset line high, A20 on
            0xd1 => self.pending = Some(Pending::WriteOutputPort),
            // 0xF0-0xFF pulse output port lines for 6 µs; bit 0 clear means the reset line.
            0xf0..=0xff => return command & 1 == 0,
            // 0xA7/0xA8 (mouse port), 0xAD/0xAE (keyboard interface) and the rest: accepted.
            _ => {}
        }
        false
    }

    /// A byte on port 0x60: a command's data, or a command for the keyboard itself.
    /// Returns true when the guest pulled the reset line.
    fn data(&mut self, value: u8) -> bool {
        self.last_was_command = false;
        match self.pending.take() {
            Some(Pending::WriteCommandByte) => self.command_byte = value,
            Some(Pending::WriteOutputPort) => return value & 1 == 0,
            Some(Pending::KeyboardArgument(0xf0)) if value == 0 => self.push(&[ACK, 0x41]),
            Some(Pending::KeyboardArgument(_)) => self.push(&[ACK]),
            None => match value {
                0xff => self.push(&[ACK, SELF_TEST_PASSED]), // reset
                0xf2 => self.push(&[ACK, 0xab, 0x41]),       // identify: MF2, translated
                0xee => self.push(&[0xee]),                  // echo
                0xed | 0xf3 | 0xf0 => {
                    self.pending = Some(Pending::KeyboardArgument(value));
                    self.push(&[ACK]);
                }
                _ => self.push(&[ACK]), // enable / disable scanning, defaults, ...
            },
        }
        false
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a snapshot keeps of the i8042. Not the end of input: that belongs to the process that
/// ran the guest, and a restored guest reads the new process's stdin.
#[derive(serde::Serialize, serde::Deserialize)]
struct I8042State {
    /// Scancodes and replies the guest has not read, the first one in the output buffer.
    queue: Vec<u8>,
    last_read: u8,
    command_byte: u8,
    pending: Option<Pending>,
    last_was_command: bool,
    /// The guest had used the keyboard: stdin arrives as key presses.
    keyboard_claimed: bool,
}

pub struct I8042 {
    controller: Arc<Mutex<Controller>>,
    input: GuestInput,
    /// Set once the guest has used the keyboard: from then on it owns the guest's input.
    keys: Option<Arc<KeyboardInput>>,
}

impl I8042 {
    pub fn new(input: GuestInput, irq: IrqLine) -> I8042 {
        I8042 {
            controller: Arc::new(Mutex::new(Controller {
                output: VecDeque::new(),
                last_read: 0,
                command_byte: DEFAULT_COMMAND_BYTE,
                pending: None,
                last_was_command: false,
                input_ended: false,
                irq,
            })),
            input,
            keys: None,
        }
    }

    /// The guest uses the keyboard: from now on its input arrives as key presses. Afterwards,
    /// takes waiting input if the queue has room (the guest has just read some of it).
    fn claim_keyboard(&mut self) {
        match &self.keys {
            Some(keys) => keys.take_input(&self.input),
            None => {
                // From a terminal, this is when raw mode starts (src/terminal.rs).
                self.input.keyboard_claimed();
                let keys = Arc::new(KeyboardInput {
                    controller: Arc::clone(&self.controller),
                    encoder: Mutex::new(KeyboardEncoder::new()),
                });
                self.input.add_listener(keys.clone());
                self.keys = Some(keys);
            }
        }
    }
}

/// The keyboard's side of the guest's input: bytes in, scancodes into the controller.
struct KeyboardInput {
    controller: Arc<Mutex<Controller>>,
    encoder: Mutex<KeyboardEncoder>,
}

impl KeyboardInput {
    /// Encodes waiting input while the queue is short; notes the end of input.
    fn take_input(&self, input: &GuestInput) {
        let mut controller = lock(&self.controller);
        if controller.input_ended {
            return;
        }
        let mut chunk = [0u8; INPUT_CHUNK];
        let mut scancodes = Vec::with_capacity((INPUT_CHUNK + 2) * MAX_SCANCODES_PER_BYTE);
        let mut encoder = lock(&self.encoder);
        while controller.output.len() < QUEUE_LOW {
            scancodes.clear();
            let n = input.try_read(&mut chunk);
            if n == 0 {
                // All that arrived together is encoded: an ESC left pending was the Escape key.
                encoder.end_of_chunk(&mut scancodes);
                controller.push(&scancodes);
                if input.is_finished() {
                    controller.end_input();
                }
                return;
            }
            encoder.encode(&chunk[..n], &mut scancodes);
            controller.push(&scancodes);
        }
    }
}

impl InputListener for KeyboardInput {
    fn input_ready(&self, input: &GuestInput) {
        self.take_input(input);
    }
}

impl BusDevice for I8042 {
    fn name(&self) -> &'static str {
        "i8042"
    }

    /// A PC/AT keyboard controller.
    fn acpi_id(&self) -> Option<AcpiId> {
        Some(AcpiId {
            name: "KBD_",
            hid: "PNP0303",
        })
    }

    /// The controller's registers and queue, and whether the guest had taken the keyboard.
    fn save_state(&self) -> crate::devices::DeviceState {
        let controller = lock(&self.controller);
        crate::devices::DeviceState::of(&I8042State {
            queue: controller.output.iter().copied().collect(),
            last_read: controller.last_read,
            command_byte: controller.command_byte,
            pending: controller.pending,
            last_was_command: controller.last_was_command,
            keyboard_claimed: self.keys.is_some(),
        })
    }

    fn restore_state(&mut self, state: &serde_json::Value) -> Result<(), String> {
        let state: I8042State = crate::devices::state::parse_state(state)?;
        if state.queue.len() > OUTPUT_CAPACITY {
            return Err(format!(
                "{} bytes queued, more than the {OUTPUT_CAPACITY} the controller holds",
                state.queue.len()
            ));
        }
        {
            let mut controller = lock(&self.controller);
            controller.output = state.queue.into();
            controller.last_read = state.last_read;
            controller.command_byte = state.command_byte;
            controller.pending = state.pending;
            controller.last_was_command = state.last_was_command;
        }
        if state.keyboard_claimed {
            self.claim_keyboard();
        }
        Ok(())
    }

    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.claim_keyboard();
        let mut controller = lock(&self.controller);
        data.fill(0);
        data[0] = if offset == DATA {
            controller.read_data()
        } else {
            controller.status()
        };
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> IoAction {
        let Some(&value) = data.first() else {
            return IoAction::Continue;
        };
        let is_reset_pulse = offset == COMMAND && value == 0xfe;
        if !is_reset_pulse {
            self.claim_keyboard();
        }
        let mut controller = lock(&self.controller);
        let reset = if offset == DATA {
            controller.data(value)
        } else {
            controller.command(value)
        };
        if reset {
            IoAction::Stop(GuestStop::Reboot)
        } else {
            IoAction::Continue
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller() -> Controller {
        Controller {
            output: VecDeque::new(),
            last_read: 0,
            command_byte: DEFAULT_COMMAND_BYTE,
            pending: None,
            last_was_command: false,
            input_ended: false,
            irq: IrqLine::disconnected(1),
        }
    }

    #[test]
    fn status_shows_a_waiting_byte() {
        let mut c = controller();
        assert_eq!(c.status() & STATUS_OUTPUT_FULL, 0);
        c.push(&[0x1e, 0x9e]);
        assert_eq!(c.status() & STATUS_OUTPUT_FULL, STATUS_OUTPUT_FULL);
        assert_eq!(c.read_data(), 0x1e);
        assert_eq!(c.read_data(), 0x9e);
        assert_eq!(c.status() & STATUS_OUTPUT_FULL, 0);
    }

    #[test]
    fn the_keyboard_locks_after_the_last_scancode_of_the_input() {
        let mut c = controller();
        assert_ne!(c.status() & STATUS_NOT_INHIBITED, 0);
        c.push(&[0x1c, 0x9c]);
        c.end_input();
        // Keys still waiting: not locked yet.
        assert_ne!(c.status() & STATUS_NOT_INHIBITED, 0);
        c.read_data();
        assert_ne!(c.status() & STATUS_NOT_INHIBITED, 0);
        c.read_data();
        assert_eq!(c.status() & (STATUS_NOT_INHIBITED | STATUS_OUTPUT_FULL), 0);
    }

    #[test]
    fn commands_and_reset() {
        let mut c = controller();
        assert!(!c.command(0x20));
        assert_eq!(c.read_data(), DEFAULT_COMMAND_BYTE);
        assert!(!c.command(0x60));
        assert!(!c.data(0x44));
        assert_eq!(c.command_byte, 0x44);
        assert!(!c.data(0xff));
        assert_eq!((c.read_data(), c.read_data()), (ACK, SELF_TEST_PASSED));
        assert!(c.command(0xfe));
        assert!(!c.command(0xd1));
        assert!(c.data(0xfe));
    }

    /// A guest that sends commands and never reads the replies: the queue stops at
    /// OUTPUT_CAPACITY and the replies after that are lost, as on a controller that overruns.
    #[test]
    fn replies_nobody_reads_stop_at_the_queue_s_capacity() {
        let mut c = controller();
        for _ in 0..100_000 {
            c.data(0xf2); // identify: three bytes of reply each
        }
        assert_eq!(c.output.len(), 268);
        // The first replies are kept whole, in order; what did not fit is gone.
        assert_eq!(
            c.output.iter().take(3).copied().collect::<Vec<_>>(),
            [ACK, 0xab, 0x41]
        );
        // 89 whole replies (267 bytes), and the first byte of the 90th.
        assert_eq!(c.output.back(), Some(&ACK));
        // Reading makes room again: a new reply is queued whole after the old ones.
        for _ in 0..268 {
            c.read_data();
        }
        c.data(0xee);
        assert_eq!(c.output, [0xee]);
    }
}
