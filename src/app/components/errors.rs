//! One human message per error kind, and the card that shows it with the action that helps.

use leptos::prelude::*;

use super::FORM_ID;
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

/// What the error card says and offers, decided once: the server renders it, the browser
/// applies it to the same card.
#[derive(Clone, Debug, PartialEq)]
pub struct Card {
    pub kind: ErrorKind,
    pub title: &'static str,
    pub detail: String,
    /// Seconds to count down before trying again, for the kinds where waiting helps.
    pub wait: Option<u64>,
    pub remedy: Remedy,
}

impl Card {
    /// `can_reconnect`: the connection to a job that is still running dropped, so following it
    /// again helps (otherwise a network error is retried by sending the form again).
    pub fn new(error: &ApiError, can_reconnect: bool) -> Self {
        let kind = error.kind;
        let mut remedy = remedy(kind);
        if remedy == Remedy::Reconnect && !can_reconnect {
            remedy = Remedy::Retry;
        }
        let wait = error.retry_after_secs.filter(|_| matches!(kind, ErrorKind::RateLimited | ErrorKind::QueueFull | ErrorKind::NotReady));
        Card { kind, title: headline(kind), detail: explanation(error), wait, remedy }
    }
}

/// The line under a card while its countdown runs.
pub fn wait_text(left: u64) -> String {
    match left {
        0 => "You can try again now.".to_string(),
        s => format!("Try again in {s} s."),
    }
}

/// The error card, with every remedy's button (only the card's own is shown), so the browser
/// changes it by attributes and text alone.
#[component]
pub fn ErrorCard(card: Option<Card>) -> impl IntoView {
    let shown = |r: Remedy| card.as_ref().is_some_and(|c| c.remedy == r);
    let wait = card.as_ref().and_then(|c| c.wait);
    view! {
        <div class="error-card" role="alert" data-testid="error" data-error-kind=card.as_ref().map(|c| c.kind.as_str())>
            <p class="error-title">{card.as_ref().map(|c| c.title)}</p>
            <p class="error-detail">{card.as_ref().map(|c| c.detail.clone())}</p>
            <p class="error-wait" data-testid="retry-wait" hidden=wait.is_none()>
                {wait.map(wait_text)}
            </p>
            <button type="submit" form=FORM_ID class="button primary" data-testid="retry" hidden=!shown(Remedy::Retry)>
                "Try again"
            </button>
            <button type="button" class="button primary" data-testid="reconnect" hidden=!shown(Remedy::Reconnect)>
                "Reconnect"
            </button>
            <button type="button" class="button" data-testid="edit" hidden=!shown(Remedy::Edit)>
                "Edit the prompt"
            </button>
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

    #[test]
    fn cards_offer_what_helps() {
        let card = Card::new(&ApiError::new(ErrorKind::QueueFull, "full").retry_after(30), false);
        assert_eq!((card.remedy, card.wait), (Remedy::Retry, Some(30)));
        // A busy visitor is told to wait for the job, not given a countdown.
        assert_eq!(Card::new(&ApiError::new(ErrorKind::Busy, "one").retry_after(5), false).wait, None);
        let lost = ApiError::new(ErrorKind::Network, "gone");
        assert_eq!(Card::new(&lost, true).remedy, Remedy::Reconnect);
        assert_eq!(Card::new(&lost, false).remedy, Remedy::Retry);
        assert_eq!(Card::new(&ApiError::new(ErrorKind::InvalidPrompt, "empty"), false).remedy, Remedy::Edit);
        assert_eq!((wait_text(0), wait_text(7)), ("You can try again now.".to_string(), "Try again in 7 s.".to_string()));
    }
}
