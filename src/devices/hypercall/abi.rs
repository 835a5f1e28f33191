//! The hypercall ABI (docs/hypercall-abi.md) as types: call numbers, errors, and a [`Request`]
//! decoded from the registers of the vCPU that made the call.
//!
//! Decoding is pure arithmetic on register values, so it is unit-tested here without a VM.

use crate::arch::CpuMode;

/// The call numbers of ABI v1.
pub mod call {
    pub const EXIT: u8 = 0x00;
    pub const PUTCHAR: u8 = 0x01;
    pub const PUTNUM: u8 = 0x02;
    pub const NEWLINE: u8 = 0x03;
    pub const GETCHAR: u8 = 0x04;
    pub const WRITE: u8 = 0x05;
    pub const READ: u8 = 0x06;
    pub const CLOCK: u8 = 0x07;
}

/// The name of a call, for traces.
pub fn call_name(number: u8) -> &'static str {
    match number {
        call::EXIT => "EXIT",
        call::PUTCHAR => "PUTCHAR",
        call::PUTNUM => "PUTNUM",
        call::NEWLINE => "NEWLINE",
        call::GETCHAR => "GETCHAR",
        call::WRITE => "WRITE",
        call::READ => "READ",
        call::CLOCK => "CLOCK",
        _ => "unknown",
    }
}

/// A failed call: the guest gets a negative result and keeps running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HypercallError {
    /// -1: no such call.
    UnknownCall,
    /// -2: a pointer range outside guest memory, or not mapped.
    Fault,
    /// -3: an argument out of range.
    InvalidArgument,
    /// The guest is being stopped (`--timeout`, quit) while the call checked its buffer: the
    /// call is abandoned, and the guest never sees a result.
    Abandoned,
}

impl HypercallError {
    pub fn code(self) -> i64 {
        match self {
            HypercallError::UnknownCall => -1,
            HypercallError::Fault => -2,
            HypercallError::InvalidArgument => -3,
            // Not part of the ABI: no guest runs on to read it.
            HypercallError::Abandoned => -4,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            HypercallError::UnknownCall => "unknown call number",
            HypercallError::Fault => "EFAULT: the buffer is not (all) in guest memory",
            HypercallError::InvalidArgument => "invalid argument",
            HypercallError::Abandoned => "abandoned: the guest is being stopped",
        }
    }
}

/// The registers a call is made with, as the vCPU read them at the exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallRegisters {
    /// AL at the `out` to the doorbell.
    pub number: u8,
    /// RBX, RCX, RSI: full 64-bit registers (cut to the mode's width by [`Request::decode`]).
    pub args: [u64; 3],
    pub mode: CpuMode,
    /// The DS base: real-mode pointers are DS-relative.
    pub data_segment_base: u64,
}

impl CallRegisters {
    /// The arguments at the width of the current mode.
    pub fn masked_args(&self) -> [u64; 3] {
        let mask = self.mode.register_mask();
        self.args.map(|arg| arg & mask)
    }
}

/// A guest buffer: `len` bytes at a guest-linear address (not yet translated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestBuffer {
    pub linear: u64,
    pub len: u64,
}

/// One call, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Exit { status: u8 },
    PutChar(u8),
    PutNum(u64),
    NewLine,
    GetChar,
    Write(GuestBuffer),
    Read(GuestBuffer),
    Clock,
}

impl Request {
    /// Decodes a call from its registers; arguments the ABI rules out are errors here, before
    /// the call touches memory or the console.
    pub fn decode(registers: &CallRegisters) -> Result<Request, HypercallError> {
        let [arg0, arg1, _] = registers.masked_args();
        let buffer = |pointer: u64, len: u64| guest_buffer(registers, pointer, len);
        match registers.number {
            call::EXIT => u8::try_from(arg0)
                .map(|status| Request::Exit { status })
                .map_err(|_| HypercallError::InvalidArgument),
            call::PUTCHAR => Ok(Request::PutChar(arg0 as u8)),
            call::PUTNUM => Ok(Request::PutNum(arg0)),
            call::NEWLINE => Ok(Request::NewLine),
            call::GETCHAR => Ok(Request::GetChar),
            call::WRITE => Ok(Request::Write(buffer(arg0, arg1)?)),
            call::READ if arg1 == 0 => Err(HypercallError::InvalidArgument),
            call::READ => Ok(Request::Read(buffer(arg0, arg1)?)),
            call::CLOCK => Ok(Request::Clock),
            _ => Err(HypercallError::UnknownCall),
        }
    }
}

/// A pointer and a length as a linear range: DS-relative in real mode, and inside the 4 GiB a
/// 16- or 32-bit guest can address.
fn guest_buffer(
    registers: &CallRegisters,
    pointer: u64,
    len: u64,
) -> Result<GuestBuffer, HypercallError> {
    let linear = if registers.mode == CpuMode::Real {
        registers.data_segment_base + (pointer & 0xffff)
    } else {
        pointer
    };
    let end = linear.checked_add(len).ok_or(HypercallError::Fault)?;
    if registers.mode != CpuMode::Long64 && end > 1 << 32 {
        return Err(HypercallError::Fault);
    }
    Ok(GuestBuffer { linear, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registers(number: u8, args: [u64; 3], mode: CpuMode) -> CallRegisters {
        CallRegisters {
            number,
            args,
            mode,
            data_segment_base: 0x10000,
        }
    }

    #[test]
    fn arguments_are_cut_to_the_width_of_the_mode() {
        let real = registers(call::PUTNUM, [0x1234_5678, 0, 0], CpuMode::Real);
        assert_eq!(Request::decode(&real), Ok(Request::PutNum(0x5678)));
        let protected = registers(call::PUTNUM, [u64::MAX, 0, 0], CpuMode::Protected32);
        assert_eq!(
            Request::decode(&protected),
            Ok(Request::PutNum(0xffff_ffff))
        );
        let long = registers(call::PUTNUM, [u64::MAX, 0, 0], CpuMode::Long64);
        assert_eq!(Request::decode(&long), Ok(Request::PutNum(u64::MAX)));
    }

    #[test]
    fn real_mode_pointers_are_ds_relative() {
        let write = registers(call::WRITE, [0x0100, 12, 0], CpuMode::Real);
        assert_eq!(
            Request::decode(&write),
            Ok(Request::Write(GuestBuffer {
                linear: 0x10100,
                len: 12
            }))
        );
    }

    #[test]
    fn exit_status_and_read_capacity_are_checked() {
        let exit = |status| registers(call::EXIT, [status, 0, 0], CpuMode::Protected32);
        assert_eq!(
            Request::decode(&exit(255)),
            Ok(Request::Exit { status: 255 })
        );
        assert_eq!(
            Request::decode(&exit(256)),
            Err(HypercallError::InvalidArgument)
        );
        let read = registers(call::READ, [0x2000, 0, 0], CpuMode::Protected32);
        assert_eq!(Request::decode(&read), Err(HypercallError::InvalidArgument));
    }

    #[test]
    fn buffers_past_4_gib_fault_outside_long_mode() {
        let past = registers(call::WRITE, [0xffff_fff0, 0x20, 0], CpuMode::Protected32);
        assert_eq!(Request::decode(&past), Err(HypercallError::Fault));
        let long = registers(call::WRITE, [0xffff_fff0, 0x20, 0], CpuMode::Long64);
        assert!(Request::decode(&long).is_ok());
        let wrapping = registers(call::WRITE, [u64::MAX, 2, 0], CpuMode::Long64);
        assert_eq!(Request::decode(&wrapping), Err(HypercallError::Fault));
    }

    #[test]
    fn unknown_numbers_are_an_error() {
        let unknown = registers(0x42, [0; 3], CpuMode::Real);
        assert_eq!(Request::decode(&unknown), Err(HypercallError::UnknownCall));
        assert_eq!(HypercallError::UnknownCall.code(), -1);
        assert_eq!(call_name(0x42), "unknown");
    }

    /// Every call's name (for traces), and the calls without arguments decoded as themselves;
    /// every error's code and words. Found missing by `cargo mutants`.
    #[test]
    fn every_call_has_its_name_and_every_error_its_code() {
        let names = [
            (call::EXIT, "EXIT"),
            (call::PUTCHAR, "PUTCHAR"),
            (call::PUTNUM, "PUTNUM"),
            (call::NEWLINE, "NEWLINE"),
            (call::GETCHAR, "GETCHAR"),
            (call::WRITE, "WRITE"),
            (call::READ, "READ"),
            (call::CLOCK, "CLOCK"),
            (0x08, "unknown"),
            (0xff, "unknown"),
        ];
        for (number, name) in names {
            assert_eq!(call_name(number), name);
        }
        let decoded =
            |number, arg0| Request::decode(&registers(number, [arg0, 0, 0], CpuMode::Protected32));
        assert_eq!(decoded(call::PUTCHAR, 0x1241), Ok(Request::PutChar(0x41)));
        assert_eq!(decoded(call::NEWLINE, 7), Ok(Request::NewLine));
        assert_eq!(decoded(call::GETCHAR, 7), Ok(Request::GetChar));
        assert_eq!(decoded(call::CLOCK, 7), Ok(Request::Clock));
        let errors = [
            (HypercallError::UnknownCall, -1, "unknown call number"),
            (
                HypercallError::Fault,
                -2,
                "EFAULT: the buffer is not (all) in guest memory",
            ),
            (HypercallError::InvalidArgument, -3, "invalid argument"),
            (
                HypercallError::Abandoned,
                -4,
                "abandoned: the guest is being stopped",
            ),
        ];
        for (error, code, words) in errors {
            assert_eq!(error.code(), code);
            assert_eq!(error.describe(), words);
        }
    }
}
