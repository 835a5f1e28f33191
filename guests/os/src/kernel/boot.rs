//! From the multiboot loader to Rust: the multiboot header, and a 32-bit stub that turns on
//! 64-bit long mode.
//!
//! mini-kvm (like GRUB) starts a multiboot kernel in 32-bit protected mode with paging off,
//! EAX = 0x2BADB002 and EBX = the physical address of the multiboot information. Long mode needs
//! paging, so the stub first builds page tables that map the first GiB one to one (virtual =
//! physical) with 2 MiB pages, then sets CR4.PAE, EFER.LME and CR0.PG, and jumps to a 64-bit
//! code segment. `kernel_main` (main.rs) replaces the page tables' first 2 MiB with 4 KiB pages
//! later (paging.rs), to leave page 0 unmapped.
//!
//! Our hosts cannot run 32-bit paging (docs/testing.md, "Why there is a rig"), which is fine: paging goes on in the same
//! step as long mode, as x86-64 requires anyway.

core::arch::global_asm!(
    r#"
    .set MULTIBOOT_MAGIC, 0x1BADB002
    # Flags: bit 1, give us the memory map; bit 16, the header holds the load addresses (the
    # image is a flat binary, not an ELF file: build.rs flattens it).
    .set MULTIBOOT_FLAGS, (1 << 1) | (1 << 16)

    .section .multiboot, "a"
    .balign 4
multiboot_header:
    .long MULTIBOOT_MAGIC
    .long MULTIBOOT_FLAGS
    .long -(MULTIBOOT_MAGIC + MULTIBOOT_FLAGS)
    .long multiboot_header          # header_addr: where this header is loaded
    .long __kernel_start            # load_addr: the image's first byte goes here (1 MiB)
    .long __load_end                # load_end_addr: end of code and data in the image
    .long __bss_end                 # bss_end_addr: zeroed up to here
    .long _start                    # entry_addr

    .section .boot32, "ax"
    .code32
    .global _start
_start:
    cli
    mov %eax, %edi                  # keep the magic and the info pointer for kernel_main
    mov %ebx, %esi

    # PML4[0] -> PDPT, PDPT[0] -> PD: present, writable.
    mov $boot_pdpt, %eax
    or $3, %eax
    mov %eax, boot_pml4
    mov $boot_pd, %eax
    or $3, %eax
    mov %eax, boot_pdpt
    # PD[i] = i * 2 MiB, a 2 MiB page (bit 7), present and writable: the first GiB.
    xor %ecx, %ecx
1:  mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, boot_pd(, %ecx, 8)
    inc %ecx
    cmp $512, %ecx
    jne 1b

    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $(1 << 5), %eax              # CR4.PAE: 64-bit page table entries
    mov %eax, %cr4
    mov $0xC0000080, %ecx           # the EFER MSR
    rdmsr
    or $(1 << 8), %eax              # EFER.LME: long mode, once paging is on
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax            # CR0.PG and PE: paging on, and with it long mode
    mov %eax, %cr0

    lgdt boot_gdt_pointer
    ljmp $0x08, $long_mode_entry    # a 64-bit code segment: now we run 64-bit code

    .text
    .code64
long_mode_entry:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    mov $boot_stack_top, %rsp
    mov %edi, %edi                  # zero-extend magic and info pointer: kernel_main's
    mov %esi, %esi                  # first two arguments
    call kernel_main
2:  cli
    hlt
    jmp 2b

    .section .rodata
    .balign 8
# The same first three descriptors as the kernel's real GDT (gdt.rs), which replaces this one
# without reloading the segment registers.
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff        # 0x08: kernel code, 64-bit
    .quad 0x00cf92000000ffff        # 0x10: kernel data
boot_gdt_pointer:
    .word boot_gdt_pointer - boot_gdt - 1
    .long boot_gdt

    .section .bss
    .balign 4096
    .global boot_pml4
    .global boot_pdpt
    .global boot_pd
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4096
boot_stack:
    .skip 16384
boot_stack_top:
"#,
    options(att_syntax)
);
