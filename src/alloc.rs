//! The process's allocator settings, in one place. We use glibc's malloc (mimalloc measured
//! worse under the soak test); two settings and one habit keep its RSS close to what the
//! memory budget says is in use:
//!
//! - two arenas (`M_ARENA_MAX`): glibc otherwise gives each thread that allocates
//!   concurrently its own arena, and the blocking pool's thread churn grew RSS for minutes;
//! - a fixed mmap threshold of 1 MiB: glibc otherwise raises it after each large free (up
//!   to 32 MiB), so photo-sized buffers land on the heap and their pages stay resident
//!   after they are freed; fixed, every such buffer is mapped and unmapped;
//! - [`trim`] after large releases: buffers under the threshold (masks, JSON, strings)
//!   leave free holes inside the heap that glibc keeps resident; `malloc_trim` hands their
//!   pages back. `crate::budget` calls it when requests have given back enough memory.
//!
//! Elsewhere (macOS, musl) these are no-ops: those allocators have neither knob.

/// Applies the settings. Call first thing in `main`, before any other thread exists.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
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
