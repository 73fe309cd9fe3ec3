//! Where the ONNX Runtime library is: an explicit path, the setup step's `.ort/` (its
//! `gpu/` folder first for the GPU devices), or beside the executable.

use std::path::{Path, PathBuf};

use crate::engine::DeviceChoice;

/// The ONNX Runtime library file the setup step downloads.
pub const ORT_LIB_NAME: &str = "libonnxruntime.so.1.31.1";
/// Where `make setup DEVICE=cuda` puts the GPU build of ONNX Runtime, inside `.ort/`.
pub const ORT_GPU_DIR: &str = "gpu";

/// Finds libonnxruntime: the explicit path, else `.ort/` in the working directory or in any
/// ancestor of the executable (a `target/release/segserve` finds the repository's `.ort/`),
/// else beside the executable.
pub fn locate_ort(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    locate_ort_for(explicit, DeviceChoice::Cpu)
}

/// [`locate_ort`] for a device: every choice but `cpu` first looks for the GPU build in
/// `.ort/gpu/` (where `make setup DEVICE=cuda` puts it), then falls back to the CPU places,
/// where the device check will say that the library found is not a GPU build.
pub fn locate_ort_for(explicit: Option<&Path>, device: DeviceChoice) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        anyhow::ensure!(
            p.is_file(),
            "ORT_DYLIB_PATH points at {}, which does not exist",
            p.display()
        );
        return Ok(p.to_path_buf());
    }
    let exe = std::env::current_exe().ok();
    let candidates = ort_candidates(exe.as_deref(), device);
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        if device == DeviceChoice::Cpu {
            anyhow::anyhow!(
                "no ONNX Runtime library found: set ORT_DYLIB_PATH to {ORT_LIB_NAME} (run `make setup` to download it from the \
                 onnxruntime==1.31.1 wheel on PyPI into .ort/)"
            )
        } else {
            anyhow::anyhow!(
                "no ONNX Runtime library found: set ORT_DYLIB_PATH to the GPU build's {ORT_LIB_NAME} (run \
                 `make setup DEVICE=cuda` to download it from the onnxruntime-gpu==1.31.1 wheel on PyPI into .ort/gpu/)"
            )
        }
    })
}

/// Where [`locate_ort_for`] looks, in order.
fn ort_candidates(exe: Option<&Path>, device: DeviceChoice) -> Vec<PathBuf> {
    let mut candidates = vec![PathBuf::from(".ort").join(ORT_LIB_NAME)];
    for dir in exe.into_iter().flat_map(|e| e.ancestors().skip(1)) {
        candidates.push(dir.join(ORT_LIB_NAME));
        candidates.push(dir.join(".ort").join(ORT_LIB_NAME));
    }
    if device != DeviceChoice::Cpu {
        let gpu: Vec<PathBuf> = candidates
            .iter()
            .filter(|p| p.parent().and_then(|d| d.file_name()) == Some(".ort".as_ref()))
            .map(|p| p.with_file_name(ORT_GPU_DIR).join(ORT_LIB_NAME))
            .collect();
        candidates.splice(0..0, gpu);
    }
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_devices_look_for_the_gpu_build_first() {
        let exe = Path::new("/repo/target/release/segserve");
        let cpu = ort_candidates(Some(exe), DeviceChoice::Cpu);
        assert_eq!(cpu[0], Path::new(".ort/libonnxruntime.so.1.31.1"));
        assert!(cpu.contains(&PathBuf::from("/repo/.ort/libonnxruntime.so.1.31.1")));
        assert!(cpu.iter().all(|p| !p.to_string_lossy().contains("gpu")));
        for device in [
            DeviceChoice::Cuda,
            DeviceChoice::TensorRt,
            DeviceChoice::Auto,
        ] {
            let gpu = ort_candidates(Some(exe), device);
            assert_eq!(gpu[0], Path::new(".ort/gpu/libonnxruntime.so.1.31.1"));
            let pos = |p: &str| gpu.iter().position(|c| c == Path::new(p)).unwrap();
            // Every GPU place comes before every CPU one, which stay as fallbacks.
            assert!(
                pos("/repo/.ort/gpu/libonnxruntime.so.1.31.1")
                    < pos(".ort/libonnxruntime.so.1.31.1")
            );
            assert_eq!(
                gpu.len(),
                cpu.len()
                    + cpu
                        .iter()
                        .filter(|p| p.parent().unwrap().file_name() == Some(".ort".as_ref()))
                        .count()
            );
        }
    }
}
