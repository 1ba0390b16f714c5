//! Reading a safetensors file into tensors without holding the weights twice: candle maps the
//! file and copies each tensor out of the mapping, so by the end of a load the mapped pages
//! (the whole file) and the copies both count against the process (an SD 1.5 UNet in f32:
//! 3.4 GB twice). Here each tensor's pages are handed back to the page cache as soon as the
//! tensor is copied, so the load peaks at the copies plus one tensor.

use std::path::Path;

use candle_core::safetensors::{Load, MmapedSafetensors};
use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

struct ReleasingWeights(MmapedSafetensors);

/// A `VarBuilder` over the safetensors file at `path`.
///
/// # Safety
/// As `VarBuilder::from_mmaped_safetensors`: the file must not change while the builder lives.
pub(super) unsafe fn from_file<'a>(
    path: &Path,
    dtype: DType,
    dev: &Device,
) -> Result<VarBuilder<'a>> {
    // SAFETY: passed on to the caller.
    let mapped = unsafe { MmapedSafetensors::new(path)? };
    Ok(VarBuilder::from_backend(
        Box::new(ReleasingWeights(mapped)),
        dtype,
        dev.clone(),
    ))
}

impl ReleasingWeights {
    fn load(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        let view = self.0.get(name)?;
        let tensor = view.load(dev)?.to_dtype(dtype)?;
        release(view.data());
        Ok(tensor)
    }
}

impl SimpleBackend for ReleasingWeights {
    fn get(&self, shape: Shape, name: &str, _: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let tensor = self.load(name, dtype, dev)?;
        if tensor.shape() != &shape {
            Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: shape,
                got: tensor.shape().clone(),
            }
            .bt())?
        }
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.load(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.get(name).is_ok()
    }
}

/// Drops the whole pages of `bytes` (part of a read-only file mapping) from the process: they
/// stay in the page cache, and a later read maps them again.
#[cfg(unix)]
fn release(bytes: &[u8]) {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
    let start = (bytes.as_ptr() as usize).next_multiple_of(page);
    let end = (bytes.as_ptr() as usize + bytes.len()) / page * page;
    if end > start {
        // SAFETY: the range lies inside a read-only mapping this process owns; MADV_DONTNEED on
        // it only drops page-table entries (nothing was written to lose). A failure leaves the
        // pages mapped, which is harmless, so its result is not needed.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}

#[cfg(not(unix))]
fn release(_: &[u8]) {}
