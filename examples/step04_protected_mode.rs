//! Step 4 of the book "Write a hypervisor with mini-kvm" (book/src/ch04-protected-mode.md):
//! protected mode. `cargo run --example step04_protected_mode`
//!
//! Step 3 with the vCPU started in 32-bit protected mode instead of real mode: the VMM writes a
//! GDT into guest memory and loads flat 4 GiB segments and CR0.PE with KVM_SET_SREGS. The guest
//! reloads its data segments from that GDT, copies a line to slot 1, now at 1 MiB where real
//! mode cannot reach, and prints it and a 32-bit number with hypercalls, whose arguments are
//! now the 32-bit registers.

use std::io::Write;
use std::process::ExitCode;

use kvm_bindings::{kvm_segment, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// The guest-physical map: two pieces of RAM, each a KVM memory slot, and a hole between them
/// where nothing is mapped. Slot 0 holds the GDT, the program (at 0x10000) and its stack.
const SLOT_0: (u64, usize) = (0x0, 0x20000); //        128 KiB
const HOLE: (u64, usize) = (0x20000, 0xe0000); //      896 KiB of nothing
const SLOT_1: (u64, usize) = (0x100000, 0x1000); //    4 KiB at 1 MiB
/// The guest is loaded at guest-physical 0x10000, and starts there: EIP = 0x10000.
const LOAD_ADDRESS: u64 = 0x10000;

/// The GDT, the guest's table of segment descriptors, at guest-physical 0x1000. KVM does not
/// read it: KVM_SET_SREGS gives it each segment's base, limit and type directly. The guest reads
/// it whenever it loads a segment register, as this one does.
const GDT_ADDRESS: u64 = 0x1000;
const GDT: [u64; 3] = [
    0,                     // 0x00: the null descriptor, which the CPU requires
    0x00cf_9a00_0000_ffff, // 0x08: code, base 0, limit 4 GiB, 32-bit, execute/read
    0x00cf_9200_0000_ffff, // 0x10: data, base 0, limit 4 GiB, read/write
];
const CODE_SELECTOR: u16 = 0x08;
const DATA_SELECTOR: u16 = 0x10;
/// CR0.PE: protected mode on. CR0.ET is hard-wired to 1 since the 486.
const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;

/// COM1, a 16550 UART: its transmit register (a byte written is a byte of output)...
const UART_DATA: u16 = 0x3f8;
/// ...and its line status register. Bit 5, "transmit holding register empty", tells a driver
/// that it may write the next byte. Our UART is never busy: the bit is always set.
const UART_LINE_STATUS: u16 = 0x3fd;
const LSR_THR_EMPTY: u8 = 1 << 5;

/// mini-kvm's hypercall port: `out %al` here with the call number in AL, arguments in BX, CX,
/// SI; the VMM puts the result in AX (book/src/ch02-port-io.md has the table).
const HYPERCALL_PORT: u16 = 0x500;
const HC_EXIT: u8 = 0x00; //    BX = status (0-255): stop the guest
const HC_PUTCHAR: u8 = 0x01; // BL = a character
const HC_PUTNUM: u8 = 0x02; //  BX = a number, printed in decimal
const HC_NEWLINE: u8 = 0x03;
const HC_WRITE: u8 = 0x05; //   BX = pointer, CX = length: print guest memory
/// Errors are negative results: -1 for a call number we do not know, -2 for a pointer outside
/// guest RAM, -3 for a bad argument.
const E_UNKNOWN_CALL: i64 = -1;
const E_FAULT: i64 = -2;
const E_INVALID_ARGUMENT: i64 = -3;

/// The guest: 32-bit code, assembled by hand (`as --32`, linked at 0x10000, gives the same).
const GUEST: &[u8] = &[
    0x66, 0xb8, 0x10, 0x00, //       mov $0x10, %ax
    0x8e, 0xd8, //                   mov %ax, %ds         reload DS and ES from the GDT
    0x8e, 0xc0, //                   mov %ax, %es
    0xbe, 0x3a, 0x00, 0x01, 0x00, // mov $message, %esi  0x1003a: addresses are linear now
    0xbf, 0x00, 0x00, 0x10, 0x00, // mov $0x100000, %edi 1 MiB, in slot 1
    0xb9, 0x25, 0x00, 0x00, 0x00, // mov $37, %ecx
    0xf3, 0xa4, //                   rep movsb            copy the text there, no VM exit
    0xbb, 0x00, 0x00, 0x10, 0x00, // mov $0x100000, %ebx
    0xb9, 0x25, 0x00, 0x00, 0x00, // mov $37, %ecx
    0x66, 0xba, 0x00, 0x05, //       mov $0x500, %dx
    0xb0, 0x05, //                   mov $5, %al
    0xee, //                         out %al, (%dx)       WRITE(0x100000, 37)
    0xbb, 0x00, 0x28, 0x6b, 0xee, // mov $4000000000, %ebx  more than 16 bits can hold
    0xb0, 0x02, //                   mov $2, %al
    0xee, //                         out %al, (%dx)       PUTNUM
    0xb0, 0x03, //                   mov $3, %al
    0xee, //                         out %al, (%dx)       NEWLINE
    0x31, 0xdb, //                   xor %ebx, %ebx
    0xb0, 0x00, //                   mov $0, %al
    0xee, //                         out %al, (%dx)       EXIT(0)
    b'H', b'e', b'l', b'l', b'o', b' ', b'f', b'r', b'o', b'm', b' ', b'p', b'r', b'o', b't', b'e',
    b'c', b't', b'e', b'd', b' ', b'm', b'o', b'd', b'e', b',', b' ', b'a', b't', b' ', b'1', b' ',
    b'M', b'i', b'B', b'!', b'\n', // message, at 0x1003a, 37 bytes
];

fn main() -> ExitCode {
    match run() {
        // The guest's EXIT status becomes this process's exit status.
        Ok(status) => ExitCode::from(status),
        Err(message) => {
            eprintln!("step04: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<u8, String> {
    // Guest RAM is ordinary memory of this process. It is made first so that it is dropped
    // last: KVM points into it for as long as the VM exists.
    let memory = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(SLOT_0.0), SLOT_0.1),
        (GuestAddress(SLOT_1.0), SLOT_1.1),
    ])
    .map_err(|e| format!("cannot map guest memory: {e}"))?;
    memory
        .write_slice(GUEST, GuestAddress(LOAD_ADDRESS))
        .map_err(|e| format!("cannot load the guest: {e}"))?;
    let gdt: Vec<u8> = GDT.iter().flat_map(|entry| entry.to_le_bytes()).collect();
    memory
        .write_slice(&gdt, GuestAddress(GDT_ADDRESS))
        .map_err(|e| format!("cannot write the GDT: {e}"))?;

    let kvm = Kvm::new().map_err(|e| format!("cannot open /dev/kvm: {e}"))?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    register_memory(&vm, &memory)?;
    let mut vcpu = create_vcpu(&vm)?;

    print_memory_map();
    run_loop(&mut vcpu, &memory)
}

/// What the guest sees at each guest-physical address.
fn print_memory_map() {
    println!("[vmm] guest-physical memory:");
    let ranges = [
        (
            SLOT_0,
            "slot 0, RAM: the GDT at 0x1000, the program at 0x10000",
        ),
        (HOLE, "no slot: an access is an MMIO exit"),
        (SLOT_1, "slot 1, RAM: above 1 MiB, out of real mode's reach"),
    ];
    for ((start, len), what) in ranges {
        let end = start + len as u64 - 1;
        println!(
            "[vmm]   {start:#08x}-{end:#08x} {:>4} KiB  {what}",
            len / 1024
        );
    }
}

/// KVM_RUN until the guest calls EXIT; returns its status. Each exit is answered here, and the
/// next KVM_RUN finishes the guest's instruction (an `in` gets the value we put in `data`).
fn run_loop(vcpu: &mut VcpuFd, memory: &GuestMemoryMmap) -> Result<u8, String> {
    let mut exits: u64 = 0;
    loop {
        let exit = vcpu.run().map_err(|e| format!("KVM_RUN: {e}"))?;
        exits += 1;
        match exit {
            VcpuExit::IoOut(UART_DATA, data) => {
                let _ = std::io::stdout().write_all(data);
            }
            VcpuExit::IoIn(UART_LINE_STATUS, data) => data[0] = LSR_THR_EMPTY,
            VcpuExit::IoOut(HYPERCALL_PORT, data) => {
                let number = data[0];
                if let Some(status) = hypercall(vcpu, memory, number)? {
                    println!("[vmm] the guest called EXIT({status}) after {exits} VM exits");
                    return Ok(status);
                }
            }
            // No device behind these ports: reads see all ones (as on a PC's empty bus), and
            // writes are dropped.
            VcpuExit::IoIn(_, data) => data.fill(0xff),
            VcpuExit::IoOut(..) => {}
            // A guest-physical address outside every slot: KVM does not know what is there,
            // so it decodes the instruction and asks us. No device here either: the same rule.
            VcpuExit::MmioWrite(address, data) => {
                println!("[vmm] MMIO write at {address:#x}: {data:02x?}, dropped");
            }
            VcpuExit::MmioRead(address, data) => {
                data.fill(0xff);
                println!("[vmm] MMIO read at {address:#x}: answered {data:02x?}");
            }
            other => return Err(format!("the guest stopped with {other:?}")),
        }
    }
}

/// Runs hypercall `number` with the guest's registers as arguments; `Some(status)` for EXIT.
fn hypercall(vcpu: &VcpuFd, memory: &GuestMemoryMmap, number: u8) -> Result<Option<u8>, String> {
    let mut regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
    let sregs = vcpu
        .get_sregs()
        .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    // The arguments are registers as wide as the guest's code: 32 bits when its code segment
    // is a 32-bit one (CS.D = 1), else 16 bits (real mode, or 16-bit protected mode).
    let width_mask = if sregs.cs.db != 0 {
        0xffff_ffff
    } else {
        0xffff
    };
    let arg0 = regs.rbx & width_mask;
    let arg1 = regs.rcx & width_mask;
    let mut stdout = std::io::stdout();
    let result = match number {
        HC_EXIT => match u8::try_from(arg0) {
            Ok(status) => return Ok(Some(status)),
            Err(_) => E_INVALID_ARGUMENT,
        },
        HC_PUTCHAR => {
            let _ = stdout.write_all(&[arg0 as u8]);
            0
        }
        HC_PUTNUM => {
            let _ = write!(stdout, "{arg0}");
            0
        }
        HC_NEWLINE => {
            let _ = writeln!(stdout);
            0
        }
        HC_WRITE => {
            // A pointer is an offset in the guest's data segment: guest-physical address =
            // DS base + offset while paging is off (DS base is 0 in this step's flat segments).
            // The whole range must be RAM, or nothing is read: vm-memory checks that for us.
            let mut text = vec![0; arg1 as usize];
            match memory.read_slice(&mut text, GuestAddress(sregs.ds.base + arg0)) {
                Ok(()) => {
                    let _ = stdout.write_all(&text);
                    arg1 as i64
                }
                Err(_) => E_FAULT,
            }
        }
        _ => E_UNKNOWN_CALL,
    };
    // The result goes to AX, where the guest finds it after its `out`. (Negative numbers are
    // all ones at the top: -1 is 0xffff in AX.)
    regs.rax = result as u64;
    vcpu.set_regs(&regs)
        .map_err(|e| format!("KVM_SET_REGS: {e}"))?;
    Ok(None)
}

/// Tells KVM where each region of `memory` is in the guest: one memory slot per region.
fn register_memory(vm: &VmFd, memory: &GuestMemoryMmap) -> Result<(), String> {
    for (slot, region) in memory.iter().enumerate() {
        let host_address = memory
            .get_host_address(region.start_addr())
            .map_err(|e| format!("guest memory has no host address: {e}"))?;
        let region = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host_address as u64,
        };
        // SAFETY: the memory stays mapped as long as the VM exists (see `run`).
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION: {e}"))?;
    }
    Ok(())
}

/// Creates vCPU 0 and starts it in 32-bit protected mode at EIP = 0x10000.
fn create_vcpu(vm: &VmFd) -> Result<VcpuFd, String> {
    let vcpu = vm
        .create_vcpu(0)
        .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
    // A real CPU gets to protected mode step by step: LGDT, set CR0.PE, a far jump to load CS.
    // KVM takes the end state in one KVM_SET_SREGS: the GDT register, CR0, and every segment
    // register with the base, limit and type its descriptor in the GDT has.
    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    sregs.gdt.base = GDT_ADDRESS;
    sregs.gdt.limit = (GDT.len() * 8 - 1) as u16;
    sregs.cr0 = CR0_PE | CR0_ET;
    sregs.cs = flat_segment(CODE_SELECTOR, 0xb); // execute/read, accessed
    for segment in [
        &mut sregs.ds,
        &mut sregs.es,
        &mut sregs.fs,
        &mut sregs.gs,
        &mut sregs.ss,
    ] {
        *segment = flat_segment(DATA_SELECTOR, 0x3); // read/write, accessed
    }
    vcpu.set_sregs(&sregs)
        .map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
    let mut regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
    regs.rip = LOAD_ADDRESS;
    regs.rsp = LOAD_ADDRESS; // the stack grows down from the program, in slot 0
    regs.rflags = 0x2; // bit 1 is always set; IF = 0: no interrupts
    vcpu.set_regs(&regs)
        .map_err(|e| format!("KVM_SET_REGS: {e}"))?;

    // What KVM now holds, read back rather than assumed.
    let sregs = vcpu
        .get_sregs()
        .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    println!(
        "[vmm] vCPU 0: CR0 = {:#x}, CS = {:#04x} (base {:#x}, limit {:#x}, {}-bit), EIP = {:#x}",
        sregs.cr0,
        sregs.cs.selector,
        sregs.cs.base,
        sregs.cs.limit,
        if sregs.cs.db != 0 { 32 } else { 16 },
        regs.rip
    );
    Ok(vcpu)
}

/// A flat segment as KVM takes it: base 0, and a limit of 4 GiB in bytes (KVM wants bytes even
/// when the granularity bit says 4 KiB pages, as in the GDT's 0xfffff).
fn flat_segment(selector: u16, type_: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: 1, // 32-bit
        s: 1,  // a code or data segment, not a system one
        l: 0,
        g: 1, // the limit counts 4 KiB pages
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}
