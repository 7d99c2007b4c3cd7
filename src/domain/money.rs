//! Whole-VND money, one home for the loan book and the payments book. VND has no
//! minor unit, so every amount that moves money must be a whole number of đồng; only
//! interest *accruals* are carried unrounded (in loan state) between postings.
//!
//! A check here fails with a `MoneyError`; each book turns it into its own refusal
//! (`From<MoneyError>` in `domain::rejection` and `domain::payments::rejection`), so
//! the two books keep their refusal kinds while sharing one rule.

use rust_decimal::prelude::*;
use rust_decimal_macros::dec;

/// Sanity ceiling for any single amount, and for a budget allocation: 10^15 VND (one
/// quadrillion). The largest social-policy loan is 10^8 and a monthly allowance ~10^6;
/// the ceiling only catches keying errors while keeping every product with rates/days,
/// and every sum of a payment run, far below Decimal's ~7.9e28.
pub const MAX_AMOUNT: Decimal = dec!(1_000_000_000_000_000);

/// Why an amount was refused, before a book names it its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoneyError {
    Negative {
        amount: Decimal,
    },
    Zero,
    Fractional {
        amount: Decimal,
    },
    TooLarge {
        amount: Decimal,
        max: Decimal,
    },
    /// Checked arithmetic overflowed: amounts far outside any real book.
    Overflow,
}

/// Validate a whole-đồng amount that moves money (must be > 0).
pub fn positive_vnd(amount: Decimal) -> Result<Decimal, MoneyError> {
    let a = non_negative_vnd(amount)?;
    if a.is_zero() {
        return Err(MoneyError::Zero);
    }
    Ok(a)
}

/// Validate a whole-đồng amount that may be zero (e.g. a household income).
/// Returns the amount normalised to scale 0 so that equal amounts compare
/// and serialise identically ("100.00" and "100" become "100").
pub fn non_negative_vnd(amount: Decimal) -> Result<Decimal, MoneyError> {
    if amount.is_sign_negative() && !amount.is_zero() {
        return Err(MoneyError::Negative { amount });
    }
    if !amount.fract().is_zero() {
        return Err(MoneyError::Fractional { amount });
    }
    if amount > MAX_AMOUNT {
        return Err(MoneyError::TooLarge {
            amount,
            max: MAX_AMOUNT,
        });
    }
    // `trunc` on a whole number only drops trailing zero scale; abs() maps -0 to 0.
    Ok(amount.trunc().abs().normalize())
}

/// Round an accrued amount to whole đồng for posting: half-up, as the bank's rule says,
/// a midpoint toward the larger whole đồng. An accrual rounds its exact interest plus the
/// carried remainder, which lies in [-0.5, 0.5): a carry of -0.5 with no interest to add
/// (the principal all overdue) rounds to 0, not to -1, so no posting is ever negative.
pub fn round_dong(x: Decimal) -> Decimal {
    let strategy = if x.is_sign_negative() {
        RoundingStrategy::MidpointTowardZero
    } else {
        RoundingStrategy::MidpointAwayFromZero
    };
    // `normalize` also turns the negative zero that rounding -0.4 gives into 0.
    x.round_dp_with_strategy(0, strategy).normalize()
}

/// An amount as Vietnamese readers write it: dots between thousands and the đồng sign,
/// `1.500.000 ₫`. For people only (tables, summaries, CSV for people); JSON keeps the
/// plain decimal string. A fractional amount (an interest accrual) keeps its decimals
/// after a comma, as Vietnamese writes them: `1.234,5 ₫`.
pub fn format_vnd(amount: Decimal) -> String {
    let normal = amount.normalize();
    let text = normal.abs().to_string();
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let mut out = String::with_capacity(text.len() + text.len() / 3 + 6);
    if normal.is_sign_negative() && !normal.is_zero() {
        out.push('-');
    }
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            out.push('.');
        }
        out.push(digit);
    }
    if !fraction.is_empty() {
        out.push(',');
        out.push_str(fraction);
    }
    out.push_str(" ₫");
    out
}

pub(crate) fn add(a: Decimal, b: Decimal) -> Result<Decimal, MoneyError> {
    a.checked_add(b).ok_or(MoneyError::Overflow)
}

pub(crate) fn sub(a: Decimal, b: Decimal) -> Result<Decimal, MoneyError> {
    a.checked_sub(b).ok_or(MoneyError::Overflow)
}

pub(crate) fn mul(a: Decimal, b: Decimal) -> Result<Decimal, MoneyError> {
    a.checked_mul(b).ok_or(MoneyError::Overflow)
}

pub(crate) fn div(a: Decimal, b: Decimal) -> Result<Decimal, MoneyError> {
    a.checked_div(b).ok_or(MoneyError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_written_as_vietnamese_readers_expect() {
        assert_eq!(format_vnd(dec!(66095000000)), "66.095.000.000 ₫");
        assert_eq!(format_vnd(dec!(1500000)), "1.500.000 ₫");
        assert_eq!(format_vnd(dec!(999)), "999 ₫");
        assert_eq!(format_vnd(dec!(1000)), "1.000 ₫");
        assert_eq!(format_vnd(dec!(0)), "0 ₫");
        assert_eq!(format_vnd(dec!(-25000)), "-25.000 ₫");
        assert_eq!(format_vnd(dec!(1234.50)), "1.234,5 ₫");
        assert_eq!(format_vnd(dec!(100.00)), "100 ₫");
    }

    #[test]
    fn amounts_are_validated() {
        assert_eq!(positive_vnd(dec!(100.00)), Ok(dec!(100)));
        assert_eq!(positive_vnd(dec!(0)), Err(MoneyError::Zero));
        assert_eq!(non_negative_vnd(dec!(0)), Ok(dec!(0)));
        assert_eq!(
            positive_vnd(dec!(-1)),
            Err(MoneyError::Negative { amount: dec!(-1) })
        );
        assert_eq!(
            positive_vnd(dec!(1.5)),
            Err(MoneyError::Fractional { amount: dec!(1.5) })
        );
        assert!(matches!(
            positive_vnd(Decimal::MAX),
            Err(MoneyError::TooLarge { .. })
        ));
    }

    #[test]
    fn rounding_is_half_up() {
        assert_eq!(round_dong(dec!(0.5)), dec!(1));
        assert_eq!(round_dong(dec!(1.4999)), dec!(1));
        assert_eq!(round_dong(dec!(2.5)), dec!(3));
        assert_eq!(round_dong(dec!(833332.5)), dec!(833333));
        assert_eq!(round_dong(dec!(833332.49)), dec!(833332));
        assert_eq!(round_dong(dec!(540000.0)).to_string(), "540000");
        // Half-up below zero too: only a carried remainder is ever negative.
        assert_eq!(round_dong(dec!(-0.5)).to_string(), "0");
        assert_eq!(round_dong(dec!(-0.4)).to_string(), "0");
        assert_eq!(round_dong(dec!(-1.5)), dec!(-1));
        assert_eq!(round_dong(dec!(-1.6)), dec!(-2));
    }
}
