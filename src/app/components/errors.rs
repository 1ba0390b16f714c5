//! One human message per error kind, and the card that shows it with the action that helps.

use leptos::either::EitherOf3;
use leptos::prelude::*;

use crate::api::{ApiError, ErrorKind};

/// What the visitor can do about an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remedy {
    /// Send the same form again.
    Retry,
    /// Follow the running job again (the connection dropped).
    Reconnect,
    /// Change the prompt or the settings first.
    Edit,
    /// Nothing to do but read.
    None,
}

/// The headline for an error: distinct for every kind, never a bare "something went wrong".
pub fn headline(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidPrompt => "That prompt can't be painted",
        ErrorKind::InvalidParams => "Some settings are out of range",
        ErrorKind::BadRequest => "The request could not be understood",
        ErrorKind::PayloadTooLarge => "That request is too large",
        ErrorKind::RateLimited => "Too many pictures in a short time",
        ErrorKind::QueueFull => "The queue is full right now",
        ErrorKind::Busy => "You already have a picture in progress",
        ErrorKind::Timeout => "This picture took too long",
        ErrorKind::InferenceFailed => "The painter failed on this picture",
        ErrorKind::Cancelled => "Cancelled",
        ErrorKind::Interrupted => "The server restarted while painting",
        ErrorKind::NotFound => "That picture no longer exists",
        ErrorKind::Forbidden => "That is not yours to change",
        ErrorKind::IdempotencyMismatch => "That request was already sent with other settings",
        ErrorKind::Expired => "That picture was cleaned up",
        ErrorKind::RequestTimeout => "The request took too long to arrive",
        ErrorKind::NotReady => "The model is still warming up",
        ErrorKind::Network => "Lost contact with the server",
        ErrorKind::Internal => "The server hit an unexpected error",
    }
}

/// The explanation under the headline. Uses the server's own words where they are the useful
/// part (what is wrong with a prompt or a setting).
pub fn explanation(error: &ApiError) -> String {
    let wait = error.retry_after_secs;
    match error.kind {
        // Without the server's words (an error read back from a URL): the page's own.
        ErrorKind::InvalidPrompt if error.message.is_empty() => "The prompt can't be painted as written. Edit it and try again.".into(),
        ErrorKind::InvalidParams if error.message.is_empty() => "A setting is out of range. Adjust the advanced settings and try again.".into(),
        ErrorKind::BadRequest if error.message.is_empty() => "Reload the page and try again.".into(),
        ErrorKind::InvalidPrompt => format!("{} Edit the prompt and try again.", error.message),
        ErrorKind::InvalidParams => format!("{} Adjust the advanced settings and try again.", error.message),
        ErrorKind::BadRequest => format!("{} Reload the page and try again.", error.message),
        ErrorKind::PayloadTooLarge => "Shorten the prompt or the negative prompt and try again.".into(),
        ErrorKind::RateLimited => match wait {
            Some(s) => format!("You can ask for a few pictures a minute. Please wait {s} s before trying again."),
            None => "You can ask for a few pictures a minute. Please wait a little before trying again.".into(),
        },
        ErrorKind::QueueFull => match wait {
            Some(s) => format!("Many people are painting at the moment. Try again in about {s} s."),
            None => "Many people are painting at the moment. Try again in a minute.".into(),
        },
        ErrorKind::Busy => "Each visitor paints one picture at a time. Wait for it to finish or cancel it, then try again."
            .into(),
        ErrorKind::Timeout => {
            "It was stopped before it finished. Try fewer steps or a smaller size, then try again.".into()
        }
        ErrorKind::InferenceFailed => "Something in the model failed. Try again, perhaps with another seed.".into(),
        ErrorKind::Cancelled => "You stopped this picture. Generate again whenever you like.".into(),
        ErrorKind::Interrupted => "Your picture was lost when the server restarted. Please try again.".into(),
        ErrorKind::NotFound => "It may have been cleaned up. Generate it again with the same settings.".into(),
        ErrorKind::Forbidden => "Only the browser that asked for this picture can cancel it.".into(),
        ErrorKind::IdempotencyMismatch => "Send it with a new Idempotency-Key, or with the settings it was first sent with.".into(),
        ErrorKind::Expired => "Pictures are kept for a while, then deleted. Generate it again with the same settings.".into(),
        ErrorKind::RequestTimeout => "The connection may be slow. Please try again.".into(),
        ErrorKind::NotReady => match wait {
            Some(s) => format!("Try again in about {s} s."),
            None => "Try again in a few seconds.".into(),
        },
        ErrorKind::Network => {
            "The connection dropped or the server is unreachable. Check your connection and try again.".into()
        }
        ErrorKind::Internal => "It was logged on our side. Please try again in a moment.".into(),
    }
}

/// What helps for a kind.
pub fn remedy(kind: ErrorKind) -> Remedy {
    match kind {
        ErrorKind::InvalidPrompt | ErrorKind::InvalidParams | ErrorKind::PayloadTooLarge => Remedy::Edit,
        ErrorKind::Network => Remedy::Reconnect,
        ErrorKind::BadRequest => Remedy::None,
        _ => Remedy::Retry,
    }
}

/// The error card. `on_reconnect` is offered for network errors while a job is still running;
/// otherwise a network error is retried by sending the form again.
#[component]
pub fn ErrorCard(
    error: ApiError,
    /// The id of the generate form (retry buttons submit it, with or without JavaScript).
    form_id: &'static str,
    /// The job to follow again, if the connection to a running job dropped.
    #[prop(default = None)]
    reconnect: Option<Callback<()>>,
    /// Called by "Edit the prompt".
    #[prop(optional)]
    on_edit: Option<Callback<()>>,
) -> impl IntoView {
    let kind = error.kind;
    let mut remedy = remedy(kind);
    if remedy == Remedy::Reconnect && reconnect.is_none() {
        remedy = Remedy::Retry;
    }
    let countdown = error.retry_after_secs.filter(|_| matches!(kind, ErrorKind::RateLimited | ErrorKind::QueueFull | ErrorKind::NotReady));
    let remaining = RwSignal::new(countdown.unwrap_or(0));
    #[cfg(feature = "hydrate")]
    if countdown.is_some() {
        // A live countdown; the card is rebuilt for every new error, so one loop per card.
        leptos::task::spawn_local(async move {
            loop {
                gloo_timers::future::TimeoutFuture::new(1_000).await;
                let Some(left) = remaining.try_get_untracked() else { break };
                if left == 0 {
                    break;
                }
                if remaining.try_set(left - 1).is_some() {
                    break;
                }
            }
        });
    }
    let explanation = explanation(&error);
    // One concrete view type per remedy (no type-erased views: each `AnyView` ships every
    // render path, hydration included, for its type).
    let action = match remedy {
        Remedy::Retry => Some(EitherOf3::A(view! {
            <button type="submit" form=form_id class="button primary" data-testid="retry">
                "Try again"
            </button>
        })),
        Remedy::Reconnect => reconnect.map(|cb| {
            EitherOf3::B(view! {
                <button type="button" class="button primary" data-testid="reconnect" on:click=move |_| cb.run(())>
                    "Reconnect"
                </button>
            })
        }),
        Remedy::Edit => Some(EitherOf3::C(view! {
            <button
                type="button"
                class="button"
                data-testid="edit"
                on:click=move |_| {
                    if let Some(cb) = on_edit {
                        cb.run(())
                    }
                }
            >
                "Edit the prompt"
            </button>
        })),
        Remedy::None => None,
    };
    view! {
        <div class="error-card" role="alert" data-testid="error" data-error-kind=kind.as_str()>
            <p class="error-title">{headline(kind)}</p>
            <p class="error-detail">{explanation}</p>
            {countdown
                .map(|_| {
                    view! {
                        <p class="error-wait" data-testid="retry-wait">
                            {move || match remaining.get() {
                                0 => "You can try again now.".to_string(),
                                s => format!("Try again in {s} s."),
                            }}
                        </p>
                    }
                })}
            {action}
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_headline() {
        let mut seen = std::collections::HashSet::new();
        for kind in ErrorKind::ALL {
            let h = headline(kind);
            assert!(seen.insert(h), "{kind} shares a headline");
            assert!(!h.to_lowercase().contains("something went wrong"));
        }
    }

    #[test]
    fn rate_limits_say_how_long_to_wait() {
        let e = ApiError::new(ErrorKind::RateLimited, "x").retry_after(12);
        assert!(explanation(&e).contains("12 s"));
        let e = ApiError::new(ErrorKind::InvalidPrompt, "The prompt is empty.");
        assert!(explanation(&e).starts_with("The prompt is empty."));
    }
}
