//! Reading the wire types from parsed JSON, written once for any JSON tree: the browser reads
//! what `JSON.parse` gives (no serde decoders in the WASM), the server reads `serde_json`
//! values (so [`JobView`]'s `Deserialize` is this same code, tested on the host).

use super::{ApiError, ErrorKind, JobFailure, JobState, JobView, ModelSummary, ModelsInfo, ResolvedParams, Timings};

/// A parsed JSON value: just what the decoders ask of it.
pub trait Json: Sized {
    /// The member `name` of an object; `None` when absent or `null`.
    fn member(&self, name: &str) -> Option<Self>;
    fn text(&self) -> Option<String>;
    fn number(&self) -> Option<f64>;
    fn items(&self) -> Option<Vec<Self>>;
}

impl Json for serde_json::Value {
    fn member(&self, name: &str) -> Option<Self> {
        self.get(name).filter(|v| !v.is_null()).cloned()
    }
    fn text(&self) -> Option<String> {
        self.as_str().map(str::to_string)
    }
    fn number(&self) -> Option<f64> {
        self.as_f64()
    }
    fn items(&self) -> Option<Vec<Self>> {
        self.as_array().cloned()
    }
}

#[cfg(feature = "hydrate")]
impl Json for wasm_bindgen::JsValue {
    fn member(&self, name: &str) -> Option<Self> {
        if !self.is_object() {
            return None;
        }
        web_sys::js_sys::Reflect::get(self, &name.into()).ok().filter(|v| !v.is_undefined() && !v.is_null())
    }
    fn text(&self) -> Option<String> {
        self.as_string()
    }
    fn number(&self) -> Option<f64> {
        self.as_f64()
    }
    fn items(&self) -> Option<Vec<Self>> {
        web_sys::js_sys::Array::is_array(self).then(|| web_sys::js_sys::Array::from(self).iter().collect())
    }
}

fn required<J: Json>(v: &J, name: &str) -> Result<J, String> {
    v.member(name).ok_or_else(|| format!("missing field `{name}`"))
}

fn wrong(name: &str, what: &str) -> String {
    format!("field `{name}` is not {what}")
}

fn text<J: Json>(v: &J, name: &str) -> Result<String, String> {
    required(v, name)?.text().ok_or_else(|| wrong(name, "a string"))
}

fn optional_text<J: Json>(v: &J, name: &str) -> Result<Option<String>, String> {
    v.member(name).map(|m| m.text().ok_or_else(|| wrong(name, "a string"))).transpose()
}

fn float<J: Json>(v: &J, name: &str) -> Result<f64, String> {
    required(v, name)?.number().ok_or_else(|| wrong(name, "a number"))
}

/// A whole number that fits `T` (JSON numbers are doubles: exact up to 2^53).
fn whole<J: Json, T: TryFrom<i64>>(v: &J, name: &str) -> Result<T, String> {
    let x = float(v, name)?;
    if x.fract() != 0.0 || x.abs() > 9_007_199_254_740_992.0 {
        return Err(wrong(name, "a whole number"));
    }
    T::try_from(x as i64).map_err(|_| wrong(name, "in range"))
}

fn optional_whole<J: Json, T: TryFrom<i64>>(v: &J, name: &str) -> Result<Option<T>, String> {
    v.member(name).map(|_| whole(v, name)).transpose()
}

pub fn error_kind(name: &str) -> Result<ErrorKind, String> {
    ErrorKind::parse(name).ok_or_else(|| format!("unknown error kind `{name}`"))
}

pub fn api_error<J: Json>(v: &J) -> Result<ApiError, String> {
    Ok(ApiError {
        kind: error_kind(&text(v, "kind")?)?,
        message: text(v, "message")?,
        retry_after_secs: optional_whole(v, "retryAfterSecs")?,
    })
}

pub fn resolved_params<J: Json>(v: &J) -> Result<ResolvedParams, String> {
    Ok(ResolvedParams {
        prompt: text(v, "prompt")?,
        negative_prompt: text(v, "negativePrompt")?,
        width: whole(v, "width")?,
        height: whole(v, "height")?,
        steps: whole(v, "steps")?,
        guidance: float(v, "guidance")?,
        seed: whole(v, "seed")?,
        model: text(v, "model")?,
    })
}

/// `{"jobId": .., "status": .., ..the state's fields, "params": .., "createdAtMs": ..}`.
pub fn job_view<J: Json>(v: &J) -> Result<JobView, String> {
    let status = text(v, "status")?;
    let for_status = |e: String| format!("{e} for status `{status}`");
    let state = match status.as_str() {
        "queued" => JobState::Queued {
            position: whole(v, "position").map_err(for_status)?,
            eta_ms: optional_whole(v, "etaMs")?,
        },
        "processing" => JobState::Processing {
            step: whole(v, "step").map_err(for_status)?,
            total: whole(v, "total").map_err(for_status)?,
            preview_url: optional_text(v, "previewUrl")?,
        },
        "completed" => {
            let image_url = text(v, "imageUrl").map_err(for_status)?;
            let (width, height, seed) = (whole(v, "width"), whole(v, "height"), whole(v, "seed"));
            let timings = required(v, "timings").map_err(for_status)?;
            JobState::Completed {
                image_url,
                width: width.map_err(for_status)?,
                height: height.map_err(for_status)?,
                seed: seed.map_err(for_status)?,
                timings: Timings {
                    queued_ms: whole(&timings, "queuedMs")?,
                    inference_ms: whole(&timings, "inferenceMs")?,
                    total_ms: whole(&timings, "totalMs")?,
                },
            }
        }
        "failed" => {
            let error = required(v, "error").map_err(for_status)?;
            JobState::Failed { error: JobFailure { kind: error_kind(&text(&error, "kind")?)?, message: text(&error, "message")? } }
        }
        "cancelled" => JobState::Cancelled,
        other => return Err(format!("unknown status `{other}`")),
    };
    Ok(JobView {
        job_id: text(v, "jobId")?,
        cancel_token: optional_text(v, "cancelToken")?,
        state,
        params: resolved_params(&required(v, "params")?)?,
        created_at_ms: whole(v, "createdAtMs")?,
    })
}

pub fn job_views<J: Json>(v: &J) -> Result<Vec<JobView>, String> {
    v.items().ok_or_else(|| "not a list of jobs".to_string())?.iter().map(job_view).collect()
}

pub fn model_summary<J: Json>(v: &J) -> Result<ModelSummary, String> {
    Ok(ModelSummary {
        name: text(v, "name")?,
        kind: text(v, "kind")?,
        default_width: whole(v, "defaultWidth")?,
        default_height: whole(v, "defaultHeight")?,
        min_size: whole(v, "minSize")?,
        max_width: whole(v, "maxWidth")?,
        max_height: whole(v, "maxHeight")?,
        default_steps: whole(v, "defaultSteps")?,
        max_steps: whole(v, "maxSteps")?,
        default_guidance: float(v, "defaultGuidance")?,
        min_guidance: float(v, "minGuidance")?,
        max_guidance: float(v, "maxGuidance")?,
    })
}

pub fn models_info<J: Json>(v: &J) -> Result<ModelsInfo, String> {
    let models = required(v, "models")?.items().ok_or_else(|| wrong("models", "a list"))?;
    Ok(ModelsInfo { models: models.iter().map(model_summary).collect::<Result<_, _>>()?, default_model: text(v, "defaultModel")? })
}

/// A number as people write it ("7.5", "7"): in the browser through JavaScript's own
/// formatting, so Rust's float formatting (14 kB of WASM) is not shipped.
pub fn decimal(x: f64) -> String {
    #[cfg(feature = "hydrate")]
    {
        web_sys::js_sys::Number::from(x).to_string_with_radix(10).map(String::from).unwrap_or_default()
    }
    #[cfg(not(feature = "hydrate"))]
    {
        x.to_string()
    }
}

/// A finite number as people type it ("7.5"), the inverse of [`decimal`]: in the browser
/// through JavaScript's `Number` (Rust's float parsing brings 20 kB of tables to the WASM).
pub fn parse_decimal(text: &str) -> Option<f64> {
    #[cfg(feature = "hydrate")]
    let x = wasm_bindgen::JsValue::from_str(text).unchecked_into_f64(); // JavaScript's `+text`
    #[cfg(not(feature = "hydrate"))]
    let x = text.parse::<f64>().ok()?;
    (x.is_finite() && !text.trim().is_empty()).then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ModelsInfo;

    #[test]
    fn models_and_errors_read_back_as_serde_writes_them() {
        let info = ModelsInfo { models: vec![ModelSummary::tiny_for_tests()], default_model: "tiny".into() };
        assert_eq!(models_info(&serde_json::to_value(&info).unwrap()).unwrap(), info);
        for e in [ApiError::new(ErrorKind::RateLimited, "slow down").retry_after(12), ApiError::new(ErrorKind::Busy, "one at a time")] {
            assert_eq!(api_error(&serde_json::to_value(&e).unwrap()).unwrap(), e);
        }
        let bad = serde_json::json!({"kind": "rate_limited", "message": "x", "retryAfterSecs": 1.5});
        assert_eq!(api_error(&bad).unwrap_err(), "field `retryAfterSecs` is not a whole number");
        let bad = serde_json::json!({"kind": "oops", "message": "x"});
        assert_eq!(api_error(&bad).unwrap_err(), "unknown error kind `oops`");
    }

    #[test]
    fn decimals_read_as_people_write_them() {
        assert_eq!((decimal(7.5), decimal(7.0), decimal(0.25)), ("7.5".into(), "7".into(), "0.25".into()));
        assert_eq!((parse_decimal("7.5"), parse_decimal("12"), parse_decimal("-0.5")), (Some(7.5), Some(12.0), Some(-0.5)));
        for unreadable in ["", "7,5", "seven", "inf", "NaN"] {
            assert_eq!(parse_decimal(unreadable), None, "{unreadable}");
        }
    }
}
