//! The customers' emails the example handles.

use super::{CRASHING_ORDER, CustomerMessage, LATE_ORDER};

/// The two customer emails of the example.
pub fn sample_messages() -> [CustomerMessage; 2] {
    [
        CustomerMessage {
            from: "lena.berg@example.com".into(),
            text: format!(
                "Hi, the hiking boots from order {CRASHING_ORDER} are a size too small. Can I send them back? Thanks, Lena"
            ),
        },
        CustomerMessage {
            from: "tom.hale@example.com".into(),
            text: format!(
                "Hello, I'd like to return the espresso machine from order {LATE_ORDER}. It is too loud. Tom"
            ),
        },
    ]
}
