//! The process's allocator settings, in one place. We use glibc's malloc (mimalloc measured
//! worse under the soak test); two settings and one habit keep its RSS close to what the
//! memory budget says is in use, without costing speed:
//!
//! - two arenas (`M_ARENA_MAX`): glibc otherwise gives each thread that allocates
//!   concurrently its own arena, and the blocking pool's thread churn grew RSS for minutes;
//! - a fixed mmap threshold of 4 MiB: glibc otherwise raises it after each large free (up
//!   to 32 MiB), so the buffers of big photos land on the heap and stay resident after
//!   they are freed. At 4 MiB the buffers of ordinary photos (a 1 MP JPEG decodes to 3 MB)
//!   stay on the heap, where the next request reuses them without page faults, and big
//!   ones are mapped and unmapped (1 MiB, which maps every photo, cost 15% of throughput);
//! - NOT a raised trim threshold: at 32 MiB bus.jpg's page faults fell from 288 a request to
//!   0 (p50 40 -> 36 ms), but the soak's settled RSS then grew +19.8 % in one CI run of
//!   about six, so glibc's default stays until the retained heap is bounded;
//! - [`trim`] after a large release, and once the server has been idle a second:
//!   `crate::budget` calls it, so the heap a big request grew, and the free heap kept
//!   warm for a steady load, are handed back when nobody is using them.
//!
//! Elsewhere (macOS, musl) these are no-ops: those allocators have neither knob.

/// Allocations from this size up get their own mapping, returned to the OS when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 4 << 20;

/// Applies the settings. Call first thing in `main`, before any other thread exists.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Returns the free pages of every arena to the operating system.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe and takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}
