//! The user programs of the teaching OS: the shell, its programs and a background counter, in
//! one ELF file that every process is loaded from (src/kernel/elf.rs). A process starts at
//! `_start` with the number of its program (abi.rs) as the argument. Everything here runs in
//! ring 3 and reaches the kernel only through system calls (sys.rs).

#![no_std]
#![no_main]

#[path = "../abi.rs"]
mod abi;
mod files;
mod io;
#[path = "../mem.rs"]
mod mem;
#[path = "../num.rs"]
mod num;
#[path = "../out.rs"]
mod out;
mod programs;
mod shell;
mod sys;

use abi::program;

#[unsafe(no_mangle)]
#[unsafe(link_section = ".text.start")]
pub extern "C" fn _start(which: u64) -> ! {
    let status = match which {
        program::SHELL => shell::main(),
        program::BGCOUNT => programs::bgcount(),
        program::MULTIPLICATION => programs::multiplication(),
        program::COUNTER => programs::counter(),
        program::ECHO => programs::echo(),
        program::FIBONACCI => programs::fibonacci(),
        program::PRIMES => programs::primes(),
        program::CALCULATOR => programs::calculator(),
        program::FACTORIAL => programs::factorial(),
        program::GCD => programs::gcd(),
        program::ABOUT => programs::about(),
        program::PS => programs::ps(),
        program::NULL => programs::null_pointer(),
        _ => 1,
    };
    sys::exit(status)
}

/// A Rust panic in a user program: end the process (no `core::fmt`: see num.rs).
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    io::print(b"user program panicked\n");
    sys::exit(101)
}
