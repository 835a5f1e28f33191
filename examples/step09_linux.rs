//! Step 9 of the book "Write a hypervisor with mini-kvm" (book/src/ch09-linux.md): booting
//! Linux. `cargo run --example step09_linux -- KERNEL INITRAMFS [COMMAND_LINE]`
//!
//! The whole VMM that a distribution's kernel needs, from Step 7 (Step 8's virtio devices are
//! left out: this machine has no disk and no network, only a console). It loads a bzImage
//! through Linux's 64-bit boot protocol: the setup header, the zero page (`boot_params`) with
//! the e820 memory map, the command line and the initramfs. It starts the kernel in long mode
//! at `startup_64`, gives it the irqchip, the PIT, CPUID and a 16550 UART on COM1 (IRQ 4, raised
//! through an irqfd) whose input is our stdin, and stops when the guest resets the machine
//! through the i8042 keyboard controller (`reboot -f` in the guest: the command line's
//! `reboot=k`), or after a panic (`panic=-1`), which it tells apart by the BIOS's warm-reset flag.

use std::io::Read;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvm_bindings::{
    KVM_MAX_CPUID_ENTRIES, kvm_pit_config, kvm_segment, kvm_userspace_memory_region,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use linux_loader::loader::KernelLoader;
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::bzimage::BzImage;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

/// The guest's RAM: 256 MiB from address 0, one KVM memory slot. Debian's kernel needs about
/// 67 MiB (it decompresses itself at 16 MiB into 51 MiB), and the initramfs goes at the top.
const RAM_SIZE: u64 = 256 << 20;
/// What a PC keeps between 640 KiB and 1 MiB (video memory, option ROMs, the BIOS): the e820
/// map leaves it out, as a PC's firmware does. Linux expects that hole.
const LEGACY_HOLE: (u64, u64) = (0xa_0000, 0x10_0000);
/// e820 type 1: usable RAM.
const E820_RAM: u32 = 1;

/// Where we put what the kernel reads at its entry, all below 640 KiB:
const GDT_ADDRESS: u64 = 0x1000;
const PML4_ADDRESS: u64 = 0x2000; // the page tables: PML4, PDPT, one page directory
const PDPT_ADDRESS: u64 = 0x3000;
const PD_ADDRESS: u64 = 0x4000;
const ZERO_PAGE_ADDRESS: u64 = 0x7000; // struct boot_params, one 4 KiB page
const CMDLINE_ADDRESS: u64 = 0x2_0000;
/// The protected-mode kernel goes at 1 MiB, where a boot loader puts it (`code32_start`).
const KERNEL_ADDRESS: u64 = 0x10_0000;
/// Its 64-bit entry point, `startup_64`, is 0x200 bytes in (boot protocol 2.12 and later).
const STARTUP_64_OFFSET: u64 = 0x200;

/// Setup header facts (Documentation/arch/x86/boot.rst): the version this VMM needs (2.12, the
/// first with `xloadflags`), and `xloadflags` bit 0, "has the 64-bit entry point".
const PROTOCOL_2_12: u16 = 0x020c;
const XLF_KERNEL_64: u16 = 1 << 0;
/// `type_of_loader` 0xff: a boot loader without an ID of its own.
const LOADER_UNDEFINED: u8 = 0xff;

/// The GDT that the 64-bit boot protocol asks for: flat code at selector 0x10 (`__BOOT_CS`)
/// and flat data at 0x18 (`__BOOT_DS`). The kernel loads its own GDT soon after.
const GDT: [u64; 4] = [
    0,                     // 0x00: null
    0,                     // 0x08: unused
    0x00af_9b00_0000_ffff, // 0x10: code, 64-bit (L = 1), execute/read, accessed
    0x00cf_9300_0000_ffff, // 0x18: data, read/write, accessed
];
const CODE_SELECTOR: u16 = 0x10;
const DATA_SELECTOR: u16 = 0x18;
/// Control register bits, as in Step 5: protected mode, paging, 64-bit page tables, long mode.
const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// Page table entry bits; a page directory entry with PAGE_SIZE_2M maps 2 MiB.
const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const PAGE_SIZE_2M: u64 = 1 << 7;

/// CPUID leaf 1, ECX bit 31: "running under a hypervisor". KVM leaves it to the VMM. With it,
/// Linux reads KVM's own leaves (0x40000000) and takes its clock from KVM (kvm-clock) instead
/// of measuring the TSC against the PIT.
const CPUID_HYPERVISOR: u32 = 1 << 31;

/// COM1: eight ports from 0x3f8, and IRQ 4, as on every PC.
const COM1: u16 = 0x3f8;
const COM1_IRQ: u32 = 4;
/// The i8042 keyboard controller's command port. Writing 0xfe there pulses the CPU's reset
/// line: `reboot=k` makes Linux reboot that way.
const I8042_COMMAND: u16 = 0x64;
const I8042_RESET: u8 = 0xfe;
const I8042_READY_WITH_DATA: u8 = 0x01;
/// Before a reset, Linux writes the BIOS's warm-reset flag, a word at 0x472: 0x1234 for a warm
/// reset, 0 for a cold one. `reboot=k,panic_warm` asks for warm only after a panic.
const WARM_RESET_FLAG: u64 = 0x472;
const WARM_RESET: u16 = 0x1234;

/// The command line when none is given (see the chapter for each word).
const DEFAULT_CMDLINE: &str = "console=ttyS0 acpi=off reboot=k,panic_warm panic=-1 quiet";
const USAGE: &str = "usage: step09_linux KERNEL INITRAMFS [COMMAND_LINE]
  KERNEL        a bzImage, e.g. /boot/vmlinuz-$(uname -r)
  INITRAMFS     a cpio archive (newc) with an /init
  COMMAND_LINE  the kernel's command line, default:
                console=ttyS0 acpi=off reboot=k,panic_warm panic=-1 quiet";
/// Linux's "interrupted system call" and "try again" error numbers: KVM_RUN returns them when
/// a signal arrives or there is no exit to report. Neither is an error: run again.
const EINTR: i32 = 4;
const EAGAIN: i32 = 11;

/// What the user asked for: the kernel, the initramfs and the command line.
struct Arguments {
    kernel: String,
    initramfs: String,
    cmdline: String,
}

/// How a run fails: a message, and the process's exit status (2 for a usage error).
struct Failure(String, u8);

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure(message, 1)
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(status) => ExitCode::from(status),
        Err(Failure(message, status)) => {
            eprintln!("step09: {message}");
            ExitCode::from(status)
        }
    }
}

fn parse_arguments() -> Result<Arguments, Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [kernel, initramfs] => Ok(Arguments {
            kernel: kernel.clone(),
            initramfs: initramfs.clone(),
            cmdline: DEFAULT_CMDLINE.to_string(),
        }),
        [kernel, initramfs, cmdline] => Ok(Arguments {
            kernel: kernel.clone(),
            initramfs: initramfs.clone(),
            cmdline: cmdline.clone(),
        }),
        _ => Err(Failure(
            format!("expected 2 or 3 arguments, got {}\n{USAGE}", args.len()),
            2,
        )),
    }
}

fn run() -> Result<u8, Failure> {
    let args = parse_arguments()?;
    let kernel = read_file("the kernel", &args.kernel)?;
    let initramfs = read_file("the initramfs", &args.initramfs)?;

    // Guest RAM first, so that it is dropped last: KVM points into it while the VM exists.
    let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM_SIZE as usize)])
        .map_err(|e| format!("cannot map guest memory: {e}"))?;
    load_linux(&memory, &args, &kernel, &initramfs)?;
    write_gdt_and_page_tables(&memory)?;

    let kvm = Kvm::new().map_err(|e| format!("cannot open /dev/kvm: {e}"))?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    register_memory(&vm, &memory)?;
    // The PIC, IOAPIC and local APIC, and the PIT: the kernel's timer and interrupt controllers
    // (Step 6). Before the vCPU, which gets its local APIC when it is created.
    vm.create_irq_chip()
        .map_err(|e| format!("KVM_CREATE_IRQCHIP: {e}"))?;
    vm.create_pit2(kvm_pit_config::default())
        .map_err(|e| format!("KVM_CREATE_PIT2: {e}"))?;
    println!(
        "[vmm] in the kernel: PIC, IOAPIC, local APIC (KVM_CREATE_IRQCHIP), PIT (KVM_CREATE_PIT2)"
    );
    let uart = create_uart(&vm)?;
    let mut vcpu = create_vcpu(&kvm, &vm)?;

    // stdin is the UART's input, from a thread of its own: a read of stdin blocks, and the vCPU
    // must keep running meanwhile.
    let input = Arc::clone(&uart);
    std::thread::spawn(move || forward_stdin(&input));
    run_loop(&mut vcpu, &memory, &uart)
}

/// Reads a file that must fit in guest RAM: no more than that is read (/dev/zero would never
/// end).
fn read_file(what: &str, path: &str) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(RAM_SIZE + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read {what} {path}: {e}"))?;
    if bytes.len() as u64 > RAM_SIZE {
        return Err(format!(
            "{what} {path} is larger than the guest's {} MiB of RAM",
            RAM_SIZE >> 20
        ));
    }
    Ok(bytes)
}

/// Loads the bzImage, the command line and the initramfs, and writes the zero page.
fn load_linux(
    memory: &GuestMemoryMmap,
    args: &Arguments,
    kernel: &[u8],
    initramfs: &[u8],
) -> Result<(), String> {
    // linux-loader checks the magic ("HdrS" at 0x202), reads the setup header at 0x1f1 and
    // copies the protected-mode kernel (the file after the setup sectors) to 1 MiB.
    let loaded = BzImage::load(
        memory,
        Some(GuestAddress(KERNEL_ADDRESS)),
        &mut std::io::Cursor::new(kernel),
        Some(GuestAddress(KERNEL_ADDRESS)),
    )
    .map_err(|e| format!("{} is not a bzImage we can boot: {e}", args.kernel))?;
    let mut header: setup_header = loaded.setup_header.ok_or("no setup header")?;
    // The header is a packed struct: its fields are copied out before use.
    let version = header.version;
    let xloadflags = header.xloadflags;
    if version < PROTOCOL_2_12 || xloadflags & XLF_KERNEL_64 == 0 {
        return Err(format!(
            "{} has no 64-bit entry point (boot protocol {}.{}, xloadflags {xloadflags:#x})",
            args.kernel,
            version >> 8,
            version & 0xff
        ));
    }
    // The kernel decompresses itself where it was linked to run (`pref_address`, 16 MiB for
    // Debian's), or at 1 MiB rounded up to `kernel_alignment`, and needs `init_size` bytes
    // there. The initramfs must stay clear of that room.
    let (alignment, preferred, init_size) = (
        header.kernel_alignment,
        header.pref_address,
        header.init_size,
    );
    let runs_at = KERNEL_ADDRESS
        .next_multiple_of(u64::from(alignment).max(1))
        .max(preferred);
    let kernel_end = runs_at + u64::from(init_size);
    println!(
        "[vmm] bzImage: boot protocol {}.{}, {} bytes of kernel at {KERNEL_ADDRESS:#x}, \
         entry startup_64 at {:#x}",
        version >> 8,
        version & 0xff,
        loaded.kernel_end - KERNEL_ADDRESS,
        KERNEL_ADDRESS + STARTUP_64_OFFSET
    );
    println!(
        "[vmm] it decompresses itself to {runs_at:#x}-{:#x} (init_size)",
        kernel_end - 1
    );

    // The command line: NUL-terminated, at an address the zero page gives.
    let max = u64::from(header.cmdline_size);
    if args.cmdline.len() as u64 > max {
        return Err(format!(
            "the command line is {} bytes; this kernel takes at most {max}",
            args.cmdline.len()
        ));
    }
    let mut cmdline = args.cmdline.as_bytes().to_vec();
    cmdline.push(0);
    memory
        .write_slice(&cmdline, GuestAddress(CMDLINE_ADDRESS))
        .map_err(|e| format!("cannot write the command line: {e}"))?;
    println!(
        "[vmm] command line at {CMDLINE_ADDRESS:#x}: {}",
        args.cmdline
    );

    // The initramfs as high as it can go: below the end of RAM and `initrd_addr_max`, on a page
    // boundary. The kernel unpacks it into its first root file system and runs its /init.
    let size = initramfs.len() as u64;
    let limit = RAM_SIZE.min(u64::from(header.initrd_addr_max) + 1);
    let initramfs_address = limit.saturating_sub(size) & !0xfff;
    if size == 0 {
        return Err(format!("the initramfs {} is empty", args.initramfs));
    }
    if initramfs_address < kernel_end {
        return Err(format!(
            "the initramfs {} ({size} bytes) does not fit in RAM above the kernel, which \
             ends at {kernel_end:#x}",
            args.initramfs
        ));
    }
    memory
        .write_slice(initramfs, GuestAddress(initramfs_address))
        .map_err(|e| format!("cannot write the initramfs: {e}"))?;
    println!("[vmm] initramfs at {initramfs_address:#x}: {size} bytes");

    // The zero page: the setup header, with the fields a boot loader fills in...
    header.type_of_loader = LOADER_UNDEFINED;
    header.cmd_line_ptr = CMDLINE_ADDRESS as u32;
    header.ramdisk_image = initramfs_address as u32;
    header.ramdisk_size = size as u32;
    let mut params = boot_params {
        hdr: header,
        ..Default::default()
    };
    // ... and the e820 memory map, which a BIOS would give: where the RAM is. Everything else
    // (the legacy hole, and all above RAM) is not RAM to the kernel.
    let map = [
        (0, LEGACY_HOLE.0),
        (LEGACY_HOLE.1, RAM_SIZE - LEGACY_HOLE.1),
    ];
    println!("[vmm] e820 map in the zero page at {ZERO_PAGE_ADDRESS:#x}:");
    for (slot, (addr, size)) in params.e820_table.iter_mut().zip(map) {
        *slot = boot_e820_entry {
            addr,
            size,
            r#type: E820_RAM,
        };
        println!("[vmm]   {addr:#010x}-{:#010x}  RAM", addr + size - 1);
    }
    params.e820_entries = map.len() as u8;
    memory
        .write_obj(params, GuestAddress(ZERO_PAGE_ADDRESS))
        .map_err(|e| format!("cannot write the zero page: {e}"))
}

/// The GDT, and page tables that map the first 1 GiB to itself with 2 MiB pages: the boot
/// protocol wants the kernel, its decompression room, the zero page and the command line
/// identity-mapped. The kernel builds its own tables from there.
fn write_gdt_and_page_tables(memory: &GuestMemoryMmap) -> Result<(), String> {
    let error = |e: vm_memory::GuestMemoryError| format!("cannot write the page tables: {e}");
    for (index, entry) in GDT.iter().enumerate() {
        memory
            .write_obj(*entry, GuestAddress(GDT_ADDRESS + index as u64 * 8))
            .map_err(error)?;
    }
    memory
        .write_obj(
            PDPT_ADDRESS | WRITABLE | PRESENT,
            GuestAddress(PML4_ADDRESS),
        )
        .and_then(|()| {
            memory.write_obj(PD_ADDRESS | WRITABLE | PRESENT, GuestAddress(PDPT_ADDRESS))
        })
        .map_err(error)?;
    for index in 0..512u64 {
        let entry = (index << 21) | PAGE_SIZE_2M | WRITABLE | PRESENT;
        memory
            .write_obj(entry, GuestAddress(PD_ADDRESS + index * 8))
            .map_err(error)?;
    }
    Ok(())
}

/// Tells KVM where the guest's RAM is: one slot.
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

/// An interrupt line for vm-superio's UART: an eventfd that KVM listens to (an irqfd). Each
/// write to it raises IRQ 4 in the in-kernel PIC and IOAPIC, from any thread, with no ioctl.
struct IrqLine(EventFd);

impl Trigger for IrqLine {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// The UART: vm-superio's 16550 model, whose output is our stdout. Shared between the vCPU's
/// exits (the guest's reads and writes of its registers) and the stdin thread.
type Uart = Arc<Mutex<Serial<IrqLine, vm_superio::serial::NoEvents, std::io::Stdout>>>;

fn create_uart(vm: &VmFd) -> Result<Uart, String> {
    let irq = EventFd::new(0).map_err(|e| format!("eventfd: {e}"))?;
    vm.register_irqfd(&irq, COM1_IRQ)
        .map_err(|e| format!("KVM_IRQFD: {e}"))?;
    println!(
        "[vmm] COM1: a 16550 UART at {COM1:#x}, IRQ {COM1_IRQ} through an irqfd; its input is stdin"
    );
    Ok(Arc::new(Mutex::new(Serial::new(
        IrqLine(irq),
        std::io::stdout(),
    ))))
}

/// Moves what arrives on stdin into the UART's receive FIFO (64 bytes in vm-superio's model),
/// which raises IRQ 4 when the guest's driver has enabled that interrupt. When the FIFO is full,
/// the rest waits here until the guest has read some: nothing typed is dropped.
fn forward_stdin(uart: &Uart) {
    let mut stdin = std::io::stdin();
    let mut buffer = [0u8; 64];
    loop {
        let n = match stdin.read(&mut buffer) {
            Ok(0) | Err(_) => return, // end of input: the guest gets no more
            Ok(n) => n,
        };
        let mut pending = &buffer[..n];
        while !pending.is_empty() {
            let sent = {
                let mut serial = uart.lock().unwrap();
                let room = serial.fifo_capacity().min(pending.len());
                if room > 0 {
                    serial.enqueue_raw_bytes(&pending[..room]).unwrap_or(0)
                } else {
                    0
                }
            };
            pending = &pending[sent..];
            if !pending.is_empty() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Creates vCPU 0 with its CPUID, and starts it at `startup_64` in long mode.
fn create_vcpu(kvm: &Kvm, vm: &VmFd) -> Result<VcpuFd, String> {
    let vcpu = vm
        .create_vcpu(0)
        .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;

    // CPUID: what this host's KVM can offer. Without it, KVM refuses EFER.LME (no "long mode"
    // bit), and Linux would find a CPU without its features.
    let mut cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| format!("KVM_GET_SUPPORTED_CPUID: {e}"))?;
    for entry in cpuid.as_mut_slice() {
        if entry.function == 1 {
            entry.ecx |= CPUID_HYPERVISOR;
        }
    }
    vcpu.set_cpuid2(&cpuid)
        .map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
    println!(
        "[vmm] CPUID: {} entries from KVM_GET_SUPPORTED_CPUID, with the hypervisor bit",
        cpuid.as_slice().len()
    );

    // Long mode, as in Step 5, with the boot protocol's selectors.
    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    sregs.gdt.base = GDT_ADDRESS;
    sregs.gdt.limit = (GDT.len() * 8 - 1) as u16;
    sregs.cr3 = PML4_ADDRESS;
    sregs.cr4 = CR4_PAE;
    sregs.efer = EFER_LME | EFER_LMA;
    sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
    sregs.cs = flat_segment(CODE_SELECTOR, 0xb);
    sregs.cs.l = 1;
    sregs.cs.db = 0;
    for segment in [
        &mut sregs.ds,
        &mut sregs.es,
        &mut sregs.fs,
        &mut sregs.gs,
        &mut sregs.ss,
    ] {
        *segment = flat_segment(DATA_SELECTOR, 0x3);
    }
    vcpu.set_sregs(&sregs)
        .map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
    // RIP at startup_64, RSI at the zero page; interrupts off. No stack: the kernel's first
    // instructions set up their own.
    let mut regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
    regs.rip = KERNEL_ADDRESS + STARTUP_64_OFFSET;
    regs.rsi = ZERO_PAGE_ADDRESS;
    regs.rflags = 0x2;
    vcpu.set_regs(&regs)
        .map_err(|e| format!("KVM_SET_REGS: {e}"))?;
    println!(
        "[vmm] vCPU 0: 64-bit, RIP = {:#x} (startup_64), RSI = {ZERO_PAGE_ADDRESS:#x} (the zero page)",
        regs.rip
    );
    Ok(vcpu)
}

/// A flat segment as KVM takes it (Step 4): base 0, limit 4 GiB in bytes.
fn flat_segment(selector: u16, type_: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// KVM_RUN until the guest resets the machine. Nearly everything Linux does runs inside KVM:
/// only the UART, the i8042's reset and the ports of devices this machine lacks come here.
fn run_loop(vcpu: &mut VcpuFd, memory: &GuestMemoryMmap, uart: &Uart) -> Result<u8, Failure> {
    let mut exits: u64 = 0;
    loop {
        let exit = match vcpu.run() {
            Ok(exit) => exit,
            Err(e) if e.errno() == EINTR || e.errno() == EAGAIN => continue,
            Err(e) => return Err(format!("KVM_RUN: {e}").into()),
        };
        exits += 1;
        match exit {
            VcpuExit::IoOut(port, data) if (COM1..COM1 + 8).contains(&port) => {
                // An error here is stdout's, or the eventfd's: the guest never hears of it.
                let _ = uart.lock().unwrap().write((port - COM1) as u8, data[0]);
            }
            VcpuExit::IoIn(port, data) if (COM1..COM1 + 8).contains(&port) => {
                data[0] = uart.lock().unwrap().read((port - COM1) as u8);
            }
            VcpuExit::IoOut(I8042_COMMAND, [I8042_RESET]) => {
                return Ok(reset(memory, exits));
            }
            // The i8042's status: 0x01, "a byte to read, ready for a command". Linux's reboot
            // waits for "ready" before it sends 0xfe; its driver, at boot, reads bytes until
            // none is left, gives up after 16 and concludes that there is no controller.
            VcpuExit::IoIn(I8042_COMMAND, data) => data[0] = I8042_READY_WITH_DATA,
            // No device behind the other ports (the second UARTs, the CMOS clock...): reads
            // see all ones, as on a PC's empty bus, and writes are dropped.
            VcpuExit::IoIn(_, data) => data.fill(0xff),
            VcpuExit::IoOut(..) => {}
            // Nor at any address outside RAM that KVM does not handle itself.
            VcpuExit::MmioRead(_, data) => data.fill(0xff),
            VcpuExit::MmioWrite(..) => {}
            VcpuExit::Shutdown => {
                return Err(format!(
                    "the guest triple-faulted (KVM_EXIT_SHUTDOWN) after {exits} VM exits"
                )
                .into());
            }
            other => return Err(format!("the guest stopped with {other:?}").into()),
        }
    }
}

/// The guest pulled the reset line: a reboot, or a panic with `panic=-1`. Linux wrote the BIOS
/// warm-reset flag first, and `reboot=k,panic_warm` makes it warm after a panic only.
fn reset(memory: &GuestMemoryMmap, exits: u64) -> u8 {
    let flag: u16 = memory.read_obj(GuestAddress(WARM_RESET_FLAG)).unwrap_or(0);
    if flag == WARM_RESET {
        println!("[vmm] the kernel panicked and reset the machine, after {exits} VM exits");
        1
    } else {
        println!(
            "[vmm] the guest reset the machine (the i8042's reset line) after {exits} VM exits"
        );
        0
    }
}
