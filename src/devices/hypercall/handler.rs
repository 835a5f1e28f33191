//! Runs a decoded hypercall against guest memory and the guest's console.
//!
//! The vCPU decodes the call from its registers ([`super::abi::Request`]) and hands it here with
//! a way to walk the guest's page tables ([`PageTables`]); the result goes back into RAX. The
//! handler never sees the vCPU itself, and the bus never sees the hypercall.

use std::io::Write;
use std::time::Instant;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::abi::{CallRegisters, GuestBuffer, HypercallError, Request, call_name};
use crate::console::{GuestInput, GuestOutput, INPUT_BUFFER, InputWait};

/// WRITE moves a guest's buffer to its console this many bytes at a time.
const CHUNK: u64 = 64 * 1024;

/// Guest-linear to guest-physical, as the calling vCPU's page tables say.
pub trait PageTables {
    /// `None` when `linear` is not mapped.
    fn translate(&mut self, linear: u64) -> Option<u64>;
}

/// What a call asks of the vCPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// Write this into RAX (cut to the mode's width) and resume.
    Result(u64),
    /// Stop the guest with this status (EXIT).
    Exit(u8),
}

/// One vCPU's hypercall handler: each vCPU has its own (its own buffers; a vCPU waiting in
/// GETCHAR holds up no other), sharing the guest's memory, console and clock.
pub struct HypercallHandler {
    memory: GuestMemoryMmap,
    output: GuestOutput,
    input: GuestInput,
    /// When the guest started: CLOCK counts from here.
    started: Instant,
    /// Print a line per call on stderr (`--verbose`), after this label (the guest's label when
    /// several guests run, or "").
    trace: Option<String>,
    /// Reused for WRITE and READ, so a call does not allocate once they have grown.
    buffer: Vec<u8>,
    pieces: Vec<(u64, u64)>,
}

impl HypercallHandler {
    pub fn new(
        memory: GuestMemoryMmap,
        output: GuestOutput,
        input: GuestInput,
        started: Instant,
        trace: Option<String>,
    ) -> HypercallHandler {
        HypercallHandler {
            memory,
            output,
            input,
            started,
            trace,
            buffer: Vec::new(),
            pieces: Vec::new(),
        }
    }

    /// The guest's CLOCK now, in nanoseconds: what a snapshot keeps of the handler.
    pub fn clock_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// Decodes and runs one call; a failed call is a negative result, never a stop.
    pub fn handle(
        &mut self,
        registers: &CallRegisters,
        page_tables: &mut dyn PageTables,
    ) -> CallOutcome {
        let result =
            Request::decode(registers).and_then(|request| self.execute(request, page_tables));
        if let Some(label) = &self.trace {
            trace_call(label, registers, &result);
        }
        match result {
            Ok(outcome) => outcome,
            Err(error) => CallOutcome::Result(error.code() as u64),
        }
    }

    fn execute(
        &mut self,
        request: Request,
        page_tables: &mut dyn PageTables,
    ) -> Result<CallOutcome, HypercallError> {
        let done = |value| Ok(CallOutcome::Result(value));
        match request {
            Request::Exit { status } => {
                self.output.flush();
                Ok(CallOutcome::Exit(status))
            }
            Request::PutChar(byte) => {
                self.output.write_bytes(&[byte]);
                done(0)
            }
            Request::PutNum(value) => {
                let mut digits = [0u8; 20];
                self.output.write_bytes(format_decimal(value, &mut digits));
                done(0)
            }
            Request::NewLine => {
                self.output.write_bytes(b"\n");
                done(0)
            }
            Request::GetChar => {
                self.output.flush();
                let mut byte = [0u8; 1];
                match self.input.read_blocking(&mut byte) {
                    InputWait::Read(_) => done(u64::from(byte[0])),
                    // -1 ends the input; a cancelled wait means the guest is being stopped
                    // anyway, and the result is never seen.
                    InputWait::EndOfInput | InputWait::Cancelled => done(-1i64 as u64),
                }
            }
            Request::Write(buffer) => {
                // The whole buffer must be guest RAM before a byte goes out (EFAULT otherwise);
                // then it goes out in chunks, so that memory stays bounded however long the
                // buffer, and a guest being stopped (--timeout) is not held up by its last call.
                // (The check itself gives up between chunks too: a long-mode guest can map 2^47
                // bytes onto one page, hours of page walks.)
                self.translate(buffer, page_tables, false)?;
                let mut written = 0;
                while written < buffer.len && !self.output.is_stopping() {
                    let chunk = GuestBuffer {
                        linear: buffer.linear + written,
                        len: (buffer.len - written).min(CHUNK),
                    };
                    self.translate(chunk, page_tables, true)?;
                    self.buffer.resize(chunk.len as usize, 0);
                    read_pieces(&self.memory, &self.pieces, &mut self.buffer);
                    self.output.write_bytes(&self.buffer);
                    written += chunk.len;
                }
                // A buffer is a unit the guest chose, often a prompt without its newline (the
                // teaching OS's "Select: ", read back through the keyboard, not GETCHAR): show
                // it now, not at the next 100 ms flush. (Labelled output still waits for whole
                // lines.)
                self.output.flush();
                done(buffer.len)
            }
            Request::Read(buffer) => {
                // No more can be waiting than the input's own buffer holds: only that much of
                // the buffer is checked and can be filled, whatever its capacity.
                let room = buffer.len.min(INPUT_BUFFER as u64);
                let buffer = GuestBuffer {
                    linear: buffer.linear,
                    len: room,
                };
                self.translate(buffer, page_tables, false)?;
                self.output.flush();
                self.buffer.resize(room as usize, 0);
                match self.input.read_blocking(&mut self.buffer) {
                    InputWait::Read(n) => {
                        let filled = GuestBuffer {
                            linear: buffer.linear,
                            len: n as u64,
                        };
                        self.translate(filled, page_tables, true)?;
                        write_pieces(&self.memory, &self.pieces, &self.buffer[..n]);
                        done(n as u64)
                    }
                    InputWait::EndOfInput | InputWait::Cancelled => done(0),
                }
            }
            Request::Clock => done(self.started.elapsed().as_nanos() as u64),
        }
    }

    /// Checks that every byte of `buffer` is mapped and is guest RAM; with `keep`, leaves in
    /// `self.pieces` the guest-physical pieces it is made of (one piece when paging is off).
    /// Callers keep the pieces of one chunk at most, so the list stays short. Every [`CHUNK`]
    /// bytes it gives up if the guest is being stopped.
    fn translate(
        &mut self,
        buffer: GuestBuffer,
        page_tables: &mut dyn PageTables,
        keep: bool,
    ) -> Result<(), HypercallError> {
        const PAGE: u64 = 4096;
        let pieces = &mut self.pieces;
        pieces.clear();
        // `Request::decode` checked that the end does not wrap.
        let end = buffer
            .linear
            .checked_add(buffer.len)
            .ok_or(HypercallError::Fault)?;
        let mut address = buffer.linear;
        let mut next_stop_check = address.saturating_add(CHUNK);
        while address < end {
            if address >= next_stop_check {
                if self.output.is_stopping() {
                    return Err(HypercallError::Abandoned);
                }
                next_stop_check = address.saturating_add(CHUNK);
            }
            // The next page boundary; in the last page of the address space there is none.
            let page_end = (address | (PAGE - 1)).checked_add(1).unwrap_or(end);
            let piece_end = end.min(page_end);
            let physical = page_tables
                .translate(address)
                .ok_or(HypercallError::Fault)?;
            let piece_len = piece_end - address;
            let in_ram = physical.checked_add(piece_len).is_some()
                && self
                    .memory
                    .check_range(GuestAddress(physical), piece_len as usize);
            if !in_ram {
                return Err(HypercallError::Fault);
            }
            match pieces.last_mut() {
                Some((start, len)) if start.checked_add(*len) == Some(physical) => {
                    *len += piece_len
                }
                _ if keep => pieces.push((physical, piece_len)),
                // Only checking: remember the last piece alone, to merge the next into it.
                _ => {
                    pieces.clear();
                    pieces.push((physical, piece_len));
                }
            }
            address = piece_end;
        }
        Ok(())
    }

    /// The guest has ended: write out what it printed.
    pub fn flush(&self) {
        self.output.flush();
    }
}

/// Formats `value` in decimal into `digits` without allocating; returns the digits used.
fn format_decimal(mut value: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &digits[start..];
        }
    }
}

/// Copies guest memory pieces into `buffer` (already checked to be RAM).
fn read_pieces(memory: &GuestMemoryMmap, pieces: &[(u64, u64)], buffer: &mut [u8]) {
    let mut offset = 0;
    for &(address, len) in pieces {
        let len = len as usize;
        // Cannot fail: `translate` checked that every piece is RAM.
        let _ = memory.read_slice(&mut buffer[offset..offset + len], GuestAddress(address));
        offset += len;
    }
}

/// Copies `bytes` into guest memory pieces (already checked to be RAM), in order.
fn write_pieces(memory: &GuestMemoryMmap, pieces: &[(u64, u64)], bytes: &[u8]) {
    let mut remaining = bytes;
    for &(address, len) in pieces {
        let n = remaining.len().min(len as usize);
        let _ = memory.write_slice(&remaining[..n], GuestAddress(address));
        remaining = &remaining[n..];
        if remaining.is_empty() {
            break;
        }
    }
}

fn trace_call(
    label: &str,
    registers: &CallRegisters,
    result: &Result<CallOutcome, HypercallError>,
) {
    let mask = registers.mode.register_mask();
    let [a0, a1, a2] = registers.masked_args();
    let what = match result {
        Ok(CallOutcome::Result(value)) => format!("-> {}", value & mask),
        Ok(CallOutcome::Exit(status)) => format!("-> guest exits with status {status}"),
        Err(error) => format!("-> {} ({})", error.code(), error.describe()),
    };
    // Not eprintln!: a trace to a closed stderr must not panic the vCPU.
    let _ = writeln!(
        crate::console::stderr::stderr(),
        "{label}    hypercall {:#04x} {}(arg0={a0:#x}, arg1={a1:#x}, arg2={a2:#x}) {what}",
        registers.number,
        call_name(registers.number)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::CpuMode;
    use crate::devices::hypercall::abi::call;

    struct Identity;
    impl PageTables for Identity {
        fn translate(&mut self, linear: u64) -> Option<u64> {
            Some(linear)
        }
    }

    /// Maps linear page 0x80000 to physical page 0x3000 and nothing else.
    struct OnePage;
    impl PageTables for OnePage {
        fn translate(&mut self, linear: u64) -> Option<u64> {
            (linear & !0xfff == 0x80000).then_some(0x3000 | (linear & 0xfff))
        }
    }

    fn handler() -> (HypercallHandler, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let sink = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let output = GuestOutput::to_sink(sink.clone(), None);
        let handler =
            HypercallHandler::new(memory, output, GuestInput::none(), Instant::now(), None);
        (handler, sink)
    }

    fn call(number: u8, args: [u64; 3]) -> CallRegisters {
        CallRegisters {
            number,
            args,
            mode: CpuMode::Protected32,
            data_segment_base: 0,
        }
    }

    #[test]
    fn write_prints_guest_memory_through_the_page_tables() {
        let (mut handler, sink) = handler();
        handler
            .memory
            .write_slice(b"hi there", GuestAddress(0x3010))
            .unwrap();
        let outcome = handler.handle(&call(call::WRITE, [0x80010, 8, 0]), &mut OnePage);
        assert_eq!(outcome, CallOutcome::Result(8));
        assert_eq!(sink.lock().unwrap().as_slice(), b"hi there");
    }

    #[test]
    fn buffers_outside_ram_or_unmapped_fault() {
        let (mut handler, _) = handler();
        let efault = CallOutcome::Result(-2i64 as u64);
        // Past the end of the 64 KiB of RAM.
        let outcome = handler.handle(&call(call::WRITE, [0xfff0, 0x20, 0]), &mut Identity);
        assert_eq!(outcome, efault);
        // The second page is not mapped.
        let outcome = handler.handle(&call(call::WRITE, [0x80ff0, 0x20, 0]), &mut OnePage);
        assert_eq!(outcome, efault);
    }

    /// Maps every linear page onto physical page 0x3000 (a long-mode guest can alias 2^47
    /// bytes so), counting the walks, and stops the guest's output at walk `stop_at`.
    struct Aliased {
        walks: u64,
        stop_at: u64,
        output: GuestOutput,
    }
    impl PageTables for Aliased {
        fn translate(&mut self, linear: u64) -> Option<u64> {
            self.walks += 1;
            if self.walks == self.stop_at {
                self.output.stop();
            }
            Some(0x3000 | (linear & 0xfff))
        }
    }

    fn long_call(number: u8, args: [u64; 3]) -> CallRegisters {
        CallRegisters {
            mode: CpuMode::Long64,
            ..call(number, args)
        }
    }

    #[test]
    fn a_huge_aliased_write_gives_up_when_the_guest_is_stopped() {
        let (mut handler, sink) = handler();
        let output = handler.output.clone();
        let mut tables = Aliased {
            walks: 0,
            stop_at: 20,
            output,
        };
        // 2^47 bytes: 2^35 page walks if nothing stopped it.
        let outcome = handler.handle(&long_call(call::WRITE, [0, 1 << 47, 0]), &mut tables);
        assert_eq!(outcome, CallOutcome::Result(-4i64 as u64));
        // Stopped at the walk of page 20, noticed at the next 64 KiB (page 32); nothing printed.
        assert_eq!(tables.walks, 32);
        assert!(sink.lock().unwrap().is_empty());
    }

    #[test]
    fn the_last_page_of_the_address_space_is_a_fault_not_an_overflow() {
        let (mut handler, _) = handler();
        let efault = CallOutcome::Result(-2i64 as u64);
        for (pointer, len) in [
            (u64::MAX - 0xf, 0x10),
            (u64::MAX - 0x1fff, 0x2000),
            (u64::MAX, 0),
        ] {
            let outcome = handler.handle(&long_call(call::WRITE, [pointer, len, 0]), &mut Identity);
            let expected = if len == 0 {
                CallOutcome::Result(0)
            } else {
                efault
            };
            assert_eq!(outcome, expected, "WRITE at {pointer:#x}, {len:#x} bytes");
        }
    }

    #[test]
    fn read_checks_only_what_it_can_fill() {
        let (mut handler, _) = handler();
        // 4 KiB of RAM at 0xf000 are the end of RAM: a capacity of 1 MiB goes past it, but READ
        // fills 4 KiB at most, and only that much must be RAM (at end of input: 0 bytes).
        let outcome = handler.handle(&call(call::READ, [0xf000, 1 << 20, 0]), &mut Identity);
        assert_eq!(outcome, CallOutcome::Result(0));
        // Past the end within the first 4 KiB: EFAULT.
        let outcome = handler.handle(&call(call::READ, [0xff00, 1 << 20, 0]), &mut Identity);
        assert_eq!(outcome, CallOutcome::Result(-2i64 as u64));
    }

    /// Linear page `i` from 0x100000 on is physical page `(5 * i) % 64` from 0x40000: pages
    /// out of order, so every page is a piece of its own.
    struct Scattered;
    impl PageTables for Scattered {
        fn translate(&mut self, linear: u64) -> Option<u64> {
            let page = linear.checked_sub(0x100000)? >> 12;
            (page < 64).then_some(0x40000 + ((5 * page) % 64) * 4096 + (linear & 0xfff))
        }
    }

    fn big_handler() -> (HypercallHandler, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x80000)]).unwrap();
        // Every byte says where it is: a piece put in the wrong place shows.
        let bytes: Vec<u8> = (0..0x80000u32)
            .map(|a| (a ^ (a >> 8) ^ (a >> 16)) as u8)
            .collect();
        memory.write_slice(&bytes, GuestAddress(0)).unwrap();
        let sink = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let output = GuestOutput::to_sink(sink.clone(), None);
        let handler =
            HypercallHandler::new(memory, output, GuestInput::none(), Instant::now(), None);
        (handler, sink)
    }

    /// A WRITE longer than one 64 KiB chunk, from the middle of a page, through pages in and
    /// out of order: every byte comes out once, in the guest's order.
    #[test]
    fn a_long_write_through_scattered_pages_prints_every_byte_in_order() {
        let (mut handler, sink) = big_handler();
        let (start, len) = (0x100800u64, 0x11000u64);
        let expected: Vec<u8> = (start..start + len)
            .map(|linear| {
                let physical = Scattered.translate(linear).unwrap();
                let mut byte = [0u8];
                handler
                    .memory
                    .read_slice(&mut byte, GuestAddress(physical))
                    .unwrap();
                byte[0]
            })
            .collect();
        let outcome = handler.handle(&call(call::WRITE, [start, len, 0]), &mut Scattered);
        assert_eq!(outcome, CallOutcome::Result(len));
        assert!(*sink.lock().unwrap() == expected, "bytes out of order");
        // The same length through contiguous pages: the pieces merge, the bytes are RAM's own.
        sink.lock().unwrap().clear();
        let outcome = handler.handle(&call(call::WRITE, [0x800, len, 0]), &mut Identity);
        assert_eq!(outcome, CallOutcome::Result(len));
        let mut contiguous = vec![0u8; len as usize];
        handler
            .memory
            .read_slice(&mut contiguous, GuestAddress(0x800))
            .unwrap();
        assert!(
            *sink.lock().unwrap() == contiguous,
            "contiguous bytes differ"
        );
        assert_eq!(
            handler.pieces,
            [(0x10800, 0x1000)],
            "the last chunk's one piece"
        );
    }

    /// PUTNUM prints in decimal; a character waits in the line buffer until the handler is
    /// flushed (the guest's end).
    #[test]
    fn putnum_is_decimal_and_flush_writes_out_a_partial_line() {
        let (mut handler, sink) = handler();
        for (number, text) in [
            (0u64, "0"),
            (7, "7"),
            (1_234_567_890, "1234567890"),
            (u64::MAX, "18446744073709551615"),
        ] {
            let outcome = handler.handle(&long_call(call::PUTNUM, [number, 0, 0]), &mut Identity);
            assert_eq!(outcome, CallOutcome::Result(0));
            handler.flush();
            assert_eq!(sink.lock().unwrap().as_slice(), text.as_bytes());
            sink.lock().unwrap().clear();
        }
        handler.handle(&call(call::PUTCHAR, [b'x' as u64, 0, 0]), &mut Identity);
        assert!(
            sink.lock().unwrap().is_empty(),
            "a partial line is buffered"
        );
        handler.flush();
        assert_eq!(sink.lock().unwrap().as_slice(), b"x");
    }

    #[test]
    fn read_at_end_of_input_returns_zero_and_exit_stops() {
        let (mut handler, _) = handler();
        let outcome = handler.handle(&call(call::READ, [0x100, 16, 0]), &mut Identity);
        assert_eq!(outcome, CallOutcome::Result(0));
        let outcome = handler.handle(&call(call::GETCHAR, [0; 3]), &mut Identity);
        assert_eq!(outcome, CallOutcome::Result(u64::MAX));
        let outcome = handler.handle(&call(call::EXIT, [42, 0, 0]), &mut Identity);
        assert_eq!(outcome, CallOutcome::Exit(42));
    }
}
