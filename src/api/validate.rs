//! Request validation: a plain function the server functions and the JSON API both call (and
//! the browser can call too, to explain a problem before sending anything).

use super::{ApiError, ErrorKind, GenerateParams, ModelSummary, ResolvedParams, MAX_PROMPT_CHARS};

/// Checks `params` against the offered models and fills in defaults. `seed` is used when the
/// request names none. Nothing about the request is stored before this succeeds.
pub fn resolve_params(
    params: &GenerateParams,
    models: &[ModelSummary],
    default_model: &str,
    seed: u32,
) -> Result<ResolvedParams, ApiError> {
    let prompt = check_prompt(&params.prompt)?;
    let negative_prompt = params.negative_prompt.trim().to_string();
    if negative_prompt.chars().count() > MAX_PROMPT_CHARS {
        return Err(invalid(format!(
            "The negative prompt is {} characters long; the limit is {MAX_PROMPT_CHARS}.",
            negative_prompt.chars().count()
        )));
    }

    let name = params.model.as_deref().unwrap_or(default_model);
    let model = models.iter().find(|m| m.name == name).ok_or_else(|| {
        let offered: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
        invalid(format!("There is no model named {name:?}; offered: {}.", offered.join(", ")))
    })?;

    let width = params.width.unwrap_or(model.default_width);
    let height = params.height.unwrap_or(model.default_height);
    check_side("width", width, model.min_size, model.max_width)?;
    check_side("height", height, model.min_size, model.max_height)?;

    let steps = params.steps.unwrap_or(model.default_steps);
    if steps == 0 || steps > model.max_steps {
        return Err(invalid(format!(
            "Steps must be between 1 and {} for {}; got {steps}.",
            model.max_steps, model.name
        )));
    }

    let guidance = params.guidance.unwrap_or(model.default_guidance);
    if !guidance.is_finite() || guidance < model.min_guidance || guidance > model.max_guidance {
        return Err(invalid(format!(
            "Guidance must be between {} and {} for {}; got {guidance}.",
            model.min_guidance, model.max_guidance, model.name
        )));
    }

    Ok(ResolvedParams {
        prompt,
        negative_prompt,
        width,
        height,
        steps,
        guidance,
        seed: params.seed.unwrap_or(seed),
        model: model.name.clone(),
    })
}

/// Trims the prompt and checks its length: 1 to [`MAX_PROMPT_CHARS`] characters.
pub fn check_prompt(prompt: &str) -> Result<String, ApiError> {
    let trimmed = prompt.trim();
    let chars = trimmed.chars().count();
    if chars == 0 {
        return Err(ApiError::new(ErrorKind::InvalidPrompt, "The prompt is empty; describe the picture you want."));
    }
    if chars > MAX_PROMPT_CHARS {
        return Err(ApiError::new(
            ErrorKind::InvalidPrompt,
            format!("The prompt is {chars} characters long; the limit is {MAX_PROMPT_CHARS}."),
        ));
    }
    Ok(trimmed.to_string())
}

fn check_side(what: &str, value: u32, min: u32, max: u32) -> Result<(), ApiError> {
    if value % 8 != 0 {
        return Err(invalid(format!("The {what} must be a multiple of 8; got {value}.")));
    }
    if value < min || value > max {
        return Err(invalid(format!("The {what} must be between {min} and {max}; got {value}.")));
    }
    Ok(())
}

fn invalid(message: String) -> ApiError {
    ApiError::new(ErrorKind::InvalidParams, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ModelSummary {
        ModelSummary::tiny_for_tests()
    }

    fn params(prompt: &str) -> GenerateParams {
        GenerateParams { prompt: prompt.into(), ..Default::default() }
    }

    fn kind_of(p: GenerateParams) -> ErrorKind {
        resolve_params(&p, &[tiny()], "tiny", 1).unwrap_err().kind
    }

    #[test]
    fn defaults_fill_in_and_prompt_is_trimmed() {
        let r = resolve_params(&params("  a fox \n"), &[tiny()], "tiny", 77).unwrap();
        assert_eq!(r.prompt, "a fox");
        assert_eq!((r.width, r.height, r.steps, r.seed), (64, 64, 4, 77));
        assert_eq!(r.model, "tiny");
    }

    #[test]
    fn a_given_seed_wins() {
        let p = GenerateParams { seed: Some(5), ..params("x") };
        assert_eq!(resolve_params(&p, &[tiny()], "tiny", 77).unwrap().seed, 5);
    }

    #[test]
    fn prompt_length_is_bounded() {
        assert_eq!(kind_of(params("   ")), ErrorKind::InvalidPrompt);
        assert_eq!(kind_of(params(&"a".repeat(1001))), ErrorKind::InvalidPrompt);
        assert!(resolve_params(&params(&"é".repeat(1000)), &[tiny()], "tiny", 1).is_ok());
    }

    #[test]
    fn every_bad_parameter_is_invalid_params() {
        let bad = [
            GenerateParams { width: Some(100), ..params("x") },
            GenerateParams { height: Some(512), ..params("x") },
            GenerateParams { width: Some(56), ..params("x") },
            GenerateParams { steps: Some(0), ..params("x") },
            GenerateParams { steps: Some(51), ..params("x") },
            GenerateParams { guidance: Some(-1.0), ..params("x") },
            GenerateParams { guidance: Some(f64::NAN), ..params("x") },
            GenerateParams { model: Some("nope".into()), ..params("x") },
            GenerateParams { negative_prompt: "n".repeat(1001), ..params("x") },
        ];
        for p in bad {
            assert_eq!(kind_of(p.clone()), ErrorKind::InvalidParams, "{p:?}");
        }
    }

    #[test]
    fn form_fields_may_be_blank_or_text() {
        let p: GenerateParams = serde_json::from_str(
            r#"{"prompt":"x","width":"","height":"128","steps":8,"seed":null,"model":""}"#,
        )
        .unwrap();
        assert_eq!((p.width, p.height, p.steps, p.seed, p.model), (None, Some(128), Some(8), None, None));
        assert!(serde_json::from_str::<GenerateParams>(r#"{"prompt":"x","width":"wide"}"#).is_err());
    }

    #[test]
    fn kinds_round_trip_as_strings() {
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::parse(kind.as_str()), Some(kind));
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{}\"", kind.as_str()));
        }
    }
}
