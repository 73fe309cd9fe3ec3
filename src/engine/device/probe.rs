//! Asks the machine, not ONNX Runtime: the NVIDIA driver (libcuda, through the CUDA driver
//! API) about the GPU, and the dynamic loader about the CUDA, cuDNN and TensorRT libraries.
//! Each answer is a sentence for `DeviceError::Missing` when something is absent. The
//! libraries are opened by name, as ONNX Runtime will open them, and stay loaded.

use std::ffi::{c_char, c_int, c_uint, CStr};
use std::fmt;

/// CUDA 13.0 as `cuDriverGetVersion` reports it (1000 x major + 10 x minor).
const CUDA_13: c_int = 13000;

/// The dynamic loader's own words (libloading's Display only says "dlopen failed").
fn loader_error(e: &libloading::Error) -> String {
    use std::error::Error as _;
    e.source().map_or_else(|| e.to_string(), |s| s.to_string())
}

/// Loads each library the way ONNX Runtime will (by name, through the dynamic loader's
/// search path) and names those that fail. Loaded libraries stay loaded: ONNX Runtime needs
/// them next anyway, and unloading CUDA libraries is not something they support.
pub(super) fn missing_libraries(libs: &[&str], what: &str, how: &str) -> Option<String> {
    let mut absent = Vec::new();
    let mut first_error = None;
    for name in libs {
        // SAFETY: these are NVIDIA's own libraries, whose initialisers are safe to run in
        // any process (ONNX Runtime loads the same files the same way).
        match unsafe { libloading::Library::new(*name) } {
            Ok(lib) => std::mem::forget(lib),
            Err(e) => {
                absent.push(*name);
                first_error.get_or_insert_with(|| loader_error(&e));
            }
        }
    }
    let first_error = first_error?;
    Some(format!(
        "{what} not found: {} (the first: {first_error}); {how}",
        absent.join(", ")
    ))
}

/// The GPU the driver reports for `--device-id`.
#[derive(Debug, Clone)]
pub struct GpuInfo {
    /// Device name, e.g. "NVIDIA H200".
    pub name: String,
    /// Device memory in bytes.
    pub memory_bytes: u64,
    /// Highest CUDA version the driver supports, as (major, minor).
    pub driver_cuda: (i32, i32),
    /// GPUs the driver sees.
    pub count: i32,
}

impl fmt::Display for GpuInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}, {:.0} GiB, driver for CUDA {}.{}, {} GPU(s) visible",
            self.name,
            self.memory_bytes as f64 / (1u64 << 30) as f64,
            self.driver_cuda.0,
            self.driver_cuda.1,
            self.count
        )
    }
}

type CuInit = unsafe extern "C" fn(c_uint) -> c_int;
type CuOutInt = unsafe extern "C" fn(*mut c_int) -> c_int;
type CuDeviceGet = unsafe extern "C" fn(*mut c_int, c_int) -> c_int;
type CuDeviceGetName = unsafe extern "C" fn(*mut c_char, c_int, c_int) -> c_int;
type CuDeviceTotalMem = unsafe extern "C" fn(*mut usize, c_int) -> c_int;
type CuGetErrorName = unsafe extern "C" fn(c_int, *mut *const c_char) -> c_int;

/// A function of the driver API.
///
/// # Safety
/// `T` must be the function's signature in cuda.h.
unsafe fn driver_fn<T: Copy>(lib: &libloading::Library, name: &str) -> Result<T, String> {
    lib.get::<T>(name.as_bytes()).map(|f| *f).map_err(|e| {
        format!(
            "libcuda.so.1 is not a usable NVIDIA driver ({})",
            loader_error(&e)
        )
    })
}

/// Asks the NVIDIA driver (libcuda, the driver API) whether there is a GPU `device_id` and
/// whether the driver is new enough for CUDA 13. The runtime libraries would fail later
/// with "CUDA driver version is insufficient" or "no CUDA-capable device is detected"
/// from inside ONNX Runtime; this says the same in words, before anything is built.
pub(super) fn probe_driver(device_id: u32) -> Result<GpuInfo, String> {
    // SAFETY: libcuda.so.1 is the NVIDIA driver's own library; loading it runs nothing but
    // its initialisers, as the CUDA runtime would.
    let lib = unsafe { libloading::Library::new("libcuda.so.1") }.map_err(|e| {
        format!(
            "no NVIDIA driver: {}; this needs an NVIDIA GPU \
             with its driver (version 580 or newer for CUDA 13) and, in a container, the \
             NVIDIA container toolkit (`docker run --gpus all`, or an nvidia.com/gpu limit \
             in Kubernetes)",
            loader_error(&e)
        )
    })?;
    // The driver stays loaded for ONNX Runtime: unloading it after cuInit is unsupported.
    let lib = std::mem::ManuallyDrop::new(lib);
    // SAFETY: each type is the function's signature in the CUDA driver API (cuda.h, stable
    // since CUDA 4), and every out-pointer below points at a live local of the right type.
    unsafe {
        let cu_init: CuInit = driver_fn(&lib, "cuInit")?;
        let driver_version: CuOutInt = driver_fn(&lib, "cuDriverGetVersion")?;
        let device_count: CuOutInt = driver_fn(&lib, "cuDeviceGetCount")?;
        let device_get: CuDeviceGet = driver_fn(&lib, "cuDeviceGet")?;
        let device_name: CuDeviceGetName = driver_fn(&lib, "cuDeviceGetName")?;
        let total_mem: CuDeviceTotalMem = driver_fn(&lib, "cuDeviceTotalMem_v2")?;
        let error_name: CuGetErrorName = driver_fn(&lib, "cuGetErrorName")?;
        let describe = |code: c_int| {
            let mut s: *const c_char = std::ptr::null();
            if error_name(code, &mut s) == 0 && !s.is_null() {
                format!("{} ({code})", CStr::from_ptr(s).to_string_lossy())
            } else {
                format!("error {code}")
            }
        };

        let mut version: c_int = 0;
        if driver_version(&mut version) != 0 {
            version = 0;
        }
        let driver_cuda = (version / 1000, (version % 1000) / 10);
        if version < CUDA_13 {
            return Err(format!(
                "the NVIDIA driver supports CUDA up to {}.{}, but this ONNX Runtime build needs \
                 CUDA 13 (driver version 580 or newer)",
                driver_cuda.0, driver_cuda.1
            ));
        }
        let rc = cu_init(0);
        if rc != 0 {
            return Err(format!(
                "the NVIDIA driver found no usable GPU (cuInit: {}); check `nvidia-smi`, and \
                 that the container was given a GPU",
                describe(rc)
            ));
        }
        let mut count: c_int = 0;
        let rc = device_count(&mut count);
        if rc != 0 || count <= 0 {
            return Err(format!(
                "the NVIDIA driver sees no GPU (cuDeviceGetCount: {}, count {count})",
                describe(rc)
            ));
        }
        if i64::from(device_id) >= i64::from(count) {
            return Err(format!(
                "--device-id {device_id}, but the NVIDIA driver sees {count} GPU(s) (ids 0 to {})",
                count - 1
            ));
        }
        let mut dev: c_int = 0;
        let rc = device_get(&mut dev, device_id as c_int);
        if rc != 0 {
            return Err(format!(
                "GPU {device_id} is not usable (cuDeviceGet: {})",
                describe(rc)
            ));
        }
        let mut name = [0 as c_char; 256];
        let name = if device_name(name.as_mut_ptr(), name.len() as c_int, dev) == 0 {
            CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned()
        } else {
            "unknown GPU".to_string()
        };
        let mut bytes: usize = 0;
        if total_mem(&mut bytes, dev) != 0 {
            bytes = 0;
        }
        Ok(GpuInfo {
            name,
            memory_bytes: bytes as u64,
            driver_cuda,
            count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_libraries_are_named_with_the_loader_error() {
        let msg = missing_libraries(
            &["libsegserve-no-such-library.so.1", "libm.so.6"],
            "test libraries",
            "install them",
        )
        .expect("the first library does not exist");
        assert!(
            msg.starts_with(
                "test libraries not found: libsegserve-no-such-library.so.1 (the first: \
                 libsegserve-no-such-library.so.1: cannot open shared object file"
            ),
            "{msg}"
        );
        assert!(!msg.contains("libm.so.6"), "{msg}");
        assert!(msg.ends_with("; install them"), "{msg}");
        assert_eq!(missing_libraries(&["libm.so.6"], "x", "y"), None);
    }
}
