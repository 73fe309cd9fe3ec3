//! Where inference runs: the CPU, or an NVIDIA GPU through ONNX Runtime's CUDA or TensorRT
//! execution provider.
//!
//! This module owns the choice (`--device cpu|cuda|tensorrt|auto`), the checks that a GPU
//! choice can work (the ONNX Runtime build, its provider libraries, the NVIDIA driver and
//! the GPU, the CUDA, cuDNN and TensorRT libraries), and the execution providers a session
//! is built with. The checks run before any session is built so that a missing piece is
//! named at startup: ONNX Runtime's own errors for these cases are either silent (a CPU
//! fallback) or name a symptom ("CUDA failure 35") rather than the cause. Asking the
//! driver and the dynamic loader is `probe`'s job; building and warming sessions stays in
//! `session`, `worker` and `Engine::load_on`.

mod probe;

use std::ffi::{c_char, c_int, CStr};
use std::fmt;
use std::path::{Path, PathBuf};

use ort::ep::{self, ExecutionProvider, ExecutionProviderDispatch};

use super::ModelInfo;
pub use probe::GpuInfo;
use probe::{missing_libraries, probe_driver};

/// `--device`: what the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// ONNX Runtime's CPU execution provider.
    Cpu,
    /// An NVIDIA GPU through the CUDA execution provider (cuDNN).
    Cuda,
    /// An NVIDIA GPU through TensorRT, with CUDA for the nodes TensorRT does not take.
    TensorRt,
    /// TensorRT if it can work here, else CUDA, else the CPU.
    Auto,
}

impl DeviceChoice {
    /// Every choice, in the order `--help` lists them.
    pub const ALL: [DeviceChoice; 4] = [
        DeviceChoice::Cpu,
        DeviceChoice::Cuda,
        DeviceChoice::TensorRt,
        DeviceChoice::Auto,
    ];

    /// The flag's value for this choice.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceChoice::Cpu => "cpu",
            DeviceChoice::Cuda => "cuda",
            DeviceChoice::TensorRt => "tensorrt",
            DeviceChoice::Auto => "auto",
        }
    }
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeviceChoice::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("must be cpu, cuda, tensorrt or auto, got {s:?}"))
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a model's sessions run, once chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    /// The CPU.
    Cpu,
    /// A GPU, CUDA execution provider.
    Cuda,
    /// A GPU, TensorRT execution provider (CUDA for the rest).
    TensorRt,
}

impl Device {
    /// The name used in flags, `GET /v1/models` and the `segserve_model_device` metric.
    pub fn as_str(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
            Device::TensorRt => "tensorrt",
        }
    }

    /// Whether this runs on a GPU (then sessions get warmed per batch size, and the pool
    /// lets every core decode images).
    pub fn is_gpu(self) -> bool {
        self != Device::Cpu
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checked device settings (built by `crate::cli` from the flags).
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// What was asked for.
    pub choice: DeviceChoice,
    /// CUDA device ordinal (`--device-id`), as the driver numbers GPUs.
    pub device_id: u32,
    /// Where TensorRT keeps built engines and its timing cache; `None`: no cache, so
    /// every start builds the engines again (tens of seconds per model).
    pub trt_cache_dir: Option<PathBuf>,
    /// Let TensorRT use FP16 kernels (faster; results move a little further from the
    /// FP32 reference).
    pub trt_fp16: bool,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig {
            choice: DeviceChoice::Cpu,
            device_id: 0,
            trt_cache_dir: None,
            trt_fp16: false,
        }
    }
}

/// Why a GPU device cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Something the device needs is missing; each entry names it and how to get it.
    #[error("--device {device} cannot run here: {}", numbered(.missing))]
    Missing {
        /// The device that was checked.
        device: Device,
        /// One sentence per missing piece.
        missing: Vec<String>,
    },
}

/// "(1) first; (2) second": one line (log pipelines want one), still easy to read.
fn numbered(items: &[String]) -> String {
    let v: Vec<String> = items
        .iter()
        .enumerate()
        .map(|(i, s)| format!("({}) {s}", i + 1))
        .collect();
    v.join("; ")
}

/// The ONNX Runtime build, with CUDA 13, that GPU devices need.
const ORT_GPU_WHEEL: &str = "onnxruntime-gpu==1.31.1";
/// Provider libraries ONNX Runtime loads from its own folder.
const PROVIDERS_SHARED: &str = "libonnxruntime_providers_shared.so";
const PROVIDERS_CUDA: &str = "libonnxruntime_providers_cuda.so";
const PROVIDERS_TENSORRT: &str = "libonnxruntime_providers_tensorrt.so";

/// What libonnxruntime_providers_cuda.so links (readelf -d of the 1.31.1 wheel) plus cuDNN,
/// which it opens at run time. cuDNN 9 itself opens its sub-libraries by name, so a partial
/// copy fails only at the first convolution; checking them here names the gap at startup.
const CUDA_LIBS: &[&str] = &[
    "libcudart.so.13",
    "libcublasLt.so.13",
    "libcublas.so.13",
    "libcurand.so.10",
    "libcudnn.so.9",
    "libcudnn_graph.so.9",
    "libcudnn_ops.so.9",
    "libcudnn_cnn.so.9",
    "libcudnn_heuristic.so.9",
    "libcudnn_engines_precompiled.so.9",
    "libcudnn_engines_runtime_compiled.so.9",
];
/// What libonnxruntime_providers_tensorrt.so links beyond the CUDA libraries.
const TENSORRT_LIBS: &[&str] = &["libnvinfer.so.10", "libnvonnxparser.so.10"];

/// The order `auto` tries devices in, and the candidates for an explicit choice.
pub fn candidates(choice: DeviceChoice) -> &'static [Device] {
    match choice {
        DeviceChoice::Cpu => &[Device::Cpu],
        DeviceChoice::Cuda => &[Device::Cuda],
        DeviceChoice::TensorRt => &[Device::TensorRt],
        DeviceChoice::Auto => &[Device::TensorRt, Device::Cuda, Device::Cpu],
    }
}

/// The devices worth trying, best first. An explicit GPU choice that fails its checks is
/// an error; `auto` logs why it skips a device and ends with the CPU, which always works.
/// ONNX Runtime must already be loaded from `ort_lib`.
pub fn usable(cfg: &DeviceConfig, ort_lib: &Path) -> Result<Vec<Device>, DeviceError> {
    let mut out = Vec::new();
    for &device in candidates(cfg.choice) {
        match check(device, ort_lib, cfg.device_id) {
            Ok(None) => out.push(device),
            Ok(Some(gpu)) => {
                tracing::info!(%device, device_id = cfg.device_id, gpu = %gpu, "GPU checks passed");
                out.push(device);
            }
            Err(e) if cfg.choice == DeviceChoice::Auto => {
                tracing::info!(%device, reason = %e, "device auto: skipping {device}");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Checks everything `device` needs that can be checked without building a session, and
/// reports every missing piece at once. Returns the GPU's description for GPU devices.
pub fn check(
    device: Device,
    ort_lib: &Path,
    device_id: u32,
) -> Result<Option<GpuInfo>, DeviceError> {
    if device == Device::Cpu {
        return Ok(None);
    }
    let mut missing = Vec::new();
    check_ort_build(device, ort_lib, &mut missing);
    let gpu = match probe_driver(device_id) {
        Ok(gpu) => Some(gpu),
        Err(why) => {
            missing.push(why);
            None
        }
    };
    let (libs, what, how) = match device {
        Device::TensorRt => (
            [CUDA_LIBS, TENSORRT_LIBS].concat(),
            "CUDA 13, cuDNN 9 and TensorRT 10 libraries",
            "install them (e.g. the nvidia-cuda-runtime, nvidia-cublas, nvidia-curand, \
             nvidia-cudnn-cu13 and tensorrt-cu13-libs 10.x wheels, or an NVIDIA TensorRT \
             container) and add their lib folders to LD_LIBRARY_PATH, or use --device cuda",
        ),
        _ => (
            CUDA_LIBS.to_vec(),
            "CUDA 13 and cuDNN 9 libraries",
            "install the CUDA 13 runtime with cuBLAS and cuRAND, and cuDNN 9 (e.g. the \
             nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04 image, or the nvidia-cuda-runtime, \
             nvidia-cublas, nvidia-curand and nvidia-cudnn-cu13 wheels that PyTorch also \
             uses) and add their lib folders to LD_LIBRARY_PATH",
        ),
    };
    if let Some(why) = missing_libraries(&libs, what, how) {
        missing.push(why);
    }
    if missing.is_empty() {
        Ok(gpu)
    } else {
        Err(DeviceError::Missing { device, missing })
    }
}

/// The ONNX Runtime library must be a GPU build, with its provider libraries beside it.
fn check_ort_build(device: Device, ort_lib: &Path, missing: &mut Vec<String>) {
    let (compiled_in, provider_name) = match device {
        Device::TensorRt => (ep::TensorRT::is_available(), "TensorRT"),
        _ => (ep::CUDA::is_available(), "CUDA"),
    };
    if !compiled_in.unwrap_or(false) {
        missing.push(format!(
            "{lib} is a CPU-only build of ONNX Runtime (its execution providers: {providers}), \
             without the {provider_name} execution provider; use the GPU build instead: \
             libonnxruntime.so.1.31.1 from the {ORT_GPU_WHEEL} wheel with {PROVIDERS_SHARED} \
             and {PROVIDERS_CUDA} beside it (`make setup DEVICE=cuda` puts them in .ort/gpu/, \
             which GPU devices use when ORT_DYLIB_PATH is not set)",
            lib = ort_lib.display(),
            providers = available_providers().join(", "),
        ));
        // The provider files only matter once the library itself is the right build.
        return;
    }
    let dir = ort_lib.parent().unwrap_or(Path::new("."));
    let mut needed = vec![PROVIDERS_SHARED, PROVIDERS_CUDA];
    if device == Device::TensorRt {
        needed.push(PROVIDERS_TENSORRT);
    }
    let absent: Vec<&str> = needed
        .into_iter()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if !absent.is_empty() {
        missing.push(format!(
            "{} lacks {} (ONNX Runtime loads its {provider_name} execution provider from the \
             folder of {}); copy them there from the {ORT_GPU_WHEEL} wheel",
            dir.display(),
            absent.join(" and "),
            ort_lib.display(),
        ));
    }
}

/// The execution providers ONNX Runtime was compiled with (`GetAvailableProviders`).
fn available_providers() -> Vec<String> {
    let api = ort::api();
    let mut list: *mut *mut c_char = std::ptr::null_mut();
    let mut len: c_int = 0;
    // SAFETY: the out-pointers are valid; ONNX Runtime fills them with `len` C strings that
    // stay valid until ReleaseAvailableProviders, and a non-null status is ours to release.
    unsafe {
        let status = (api.GetAvailableProviders)(&mut list, &mut len);
        if !status.0.is_null() {
            (api.ReleaseStatus)(status.0);
            return vec!["unknown".into()];
        }
        if list.is_null() {
            return Vec::new();
        }
        let names = (0..len.max(0) as usize)
            .map(|i| CStr::from_ptr(*list.add(i)).to_string_lossy().into_owned())
            .collect();
        let status = (api.ReleaseAvailableProviders)(list, len);
        if !status.0.is_null() {
            (api.ReleaseStatus)(status.0);
        }
        names
    }
}

/// The range of input shapes TensorRT builds its engine for, so that one engine covers
/// every batch size the pool will send (without one, TensorRT builds for the first shape
/// it sees and rebuilds, for seconds, on a request with a new batch size).
#[derive(Debug, Clone)]
pub struct TrtProfile {
    input: String,
    hw: (usize, usize),
    max_batch: usize,
}

impl TrtProfile {
    /// The profile for `info`'s input, or `None` when every dimension is fixed.
    pub fn for_model(info: &ModelInfo, max_batch: usize) -> Option<TrtProfile> {
        info.dynamic_batch.then(|| TrtProfile {
            input: info.input_name.clone(),
            hw: info.input_hw,
            max_batch: max_batch.max(1),
        })
    }

    fn shape(&self, batch: usize) -> String {
        format!("{}:{batch}x3x{}x{}", self.input, self.hw.0, self.hw.1)
    }
}

/// The execution providers for `device`, in priority order; empty for the CPU (ONNX
/// Runtime's default). Each fails session building if it cannot register, rather than
/// leaving the model on the CPU without a word.
pub fn execution_providers(
    device: Device,
    cfg: &DeviceConfig,
    profile: Option<&TrtProfile>,
) -> Vec<ExecutionProviderDispatch> {
    let id = cfg.device_id as i32;
    // Exhaustive cuDNN search (the default, stated here because warm-up relies on it):
    // the fastest convolution algorithms, found once per input shape during warm-up.
    let cuda = || {
        ep::CUDA::default()
            .with_device_id(id)
            .with_conv_algorithm_search(ep::cuda::ConvAlgorithmSearch::Exhaustive)
            .build()
            .error_on_failure()
    };
    match device {
        Device::Cpu => Vec::new(),
        Device::Cuda => vec![cuda()],
        Device::TensorRt => {
            let mut trt = ep::TensorRT::default()
                .with_device_id(id)
                .with_fp16(cfg.trt_fp16);
            if let Some(dir) = &cfg.trt_cache_dir {
                let dir = dir.display().to_string();
                trt = trt
                    .with_engine_cache(true)
                    .with_engine_cache_path(&dir)
                    .with_timing_cache(true)
                    .with_timing_cache_path(&dir);
            }
            if let Some(p) = profile {
                trt = trt
                    .with_profile_min_shapes(p.shape(1))
                    .with_profile_opt_shapes(p.shape(p.max_batch))
                    .with_profile_max_shapes(p.shape(p.max_batch));
            }
            // CUDA second: it takes the nodes TensorRT leaves, which would otherwise go to
            // the CPU and copy tensors back and forth.
            vec![trt.build().error_on_failure(), cuda()]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_tries_tensorrt_then_cuda_then_cpu() {
        assert_eq!(
            candidates(DeviceChoice::Auto),
            [Device::TensorRt, Device::Cuda, Device::Cpu]
        );
        assert_eq!(candidates(DeviceChoice::Cuda), [Device::Cuda]);
        assert_eq!(candidates(DeviceChoice::Cpu), [Device::Cpu]);
    }

    #[test]
    fn trt_profile_covers_batch_one_to_max() {
        let p = TrtProfile {
            input: "images".into(),
            hw: (640, 640),
            max_batch: 8,
        };
        assert_eq!(p.shape(1), "images:1x3x640x640");
        assert_eq!(p.shape(p.max_batch), "images:8x3x640x640");
    }

    #[test]
    fn device_names_are_the_flag_values() {
        for (choice, device) in [
            (DeviceChoice::Cpu, Device::Cpu),
            (DeviceChoice::Cuda, Device::Cuda),
            (DeviceChoice::TensorRt, Device::TensorRt),
        ] {
            assert_eq!(choice.as_str(), device.as_str());
            assert_eq!(device.as_str().parse::<DeviceChoice>(), Ok(choice));
        }
        assert!("gpu".parse::<DeviceChoice>().is_err());
    }
}
