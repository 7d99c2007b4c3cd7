//! Whole-VND money helpers. VND has no minor unit, so every amount that
//! moves money must be a whole number of đồng; only interest *accruals* are
//! carried unrounded (in loan state) between postings.

use rust_decimal::prelude::*;
use rust_decimal_macros::dec;

use crate::domain::Rejection;

/// Sanity ceiling for any single amount: 10^15 VND (one quadrillion). The
/// largest social-policy loan is 10^8; the ceiling only catches keying errors
/// while keeping every product with rates/days far below Decimal's ~7.9e28.
pub const MAX_AMOUNT: Decimal = dec!(1_000_000_000_000_000);

/// Validate a whole-đồng amount that moves money (must be > 0).
pub fn positive_vnd(amount: Decimal) -> Result<Decimal, Rejection> {
    let a = non_negative_vnd(amount)?;
    if a.is_zero() {
        return Err(Rejection::ZeroAmount);
    }
    Ok(a)
}

/// Validate a whole-đồng amount that may be zero (e.g. a household income).
/// Returns the amount normalised to scale 0 so that equal amounts compare
/// and serialise identically ("100.00" and "100" become "100").
pub fn non_negative_vnd(amount: Decimal) -> Result<Decimal, Rejection> {
    if amount.is_sign_negative() && !amount.is_zero() {
        return Err(Rejection::NegativeAmount { amount });
    }
    if !amount.fract().is_zero() {
        return Err(Rejection::FractionalDong { amount });
    }
    if amount > MAX_AMOUNT {
        return Err(Rejection::AmountTooLarge {
            amount,
            max: MAX_AMOUNT,
        });
    }
    // `trunc` on a whole number only drops trailing zero scale; abs() maps -0 to 0.
    Ok(amount.trunc().abs().normalize())
}

/// Round an accrued amount to whole đồng for posting. Half-up for the
/// positive values we post (MidpointAwayFromZero), as the bank's rule says.
pub fn round_dong(x: Decimal) -> Decimal {
    x.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
        .normalize()
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

pub(crate) fn add(a: Decimal, b: Decimal) -> Result<Decimal, Rejection> {
    a.checked_add(b).ok_or(Rejection::ArithmeticOverflow)
}

pub(crate) fn sub(a: Decimal, b: Decimal) -> Result<Decimal, Rejection> {
    a.checked_sub(b).ok_or(Rejection::ArithmeticOverflow)
}

pub(crate) fn mul(a: Decimal, b: Decimal) -> Result<Decimal, Rejection> {
    a.checked_mul(b).ok_or(Rejection::ArithmeticOverflow)
}

pub(crate) fn div(a: Decimal, b: Decimal) -> Result<Decimal, Rejection> {
    a.checked_div(b).ok_or(Rejection::ArithmeticOverflow)
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
        assert_eq!(positive_vnd(dec!(0)), Err(Rejection::ZeroAmount));
        assert_eq!(non_negative_vnd(dec!(0)), Ok(dec!(0)));
        assert_eq!(
            positive_vnd(dec!(-1)),
            Err(Rejection::NegativeAmount { amount: dec!(-1) })
        );
        assert_eq!(
            positive_vnd(dec!(1.5)),
            Err(Rejection::FractionalDong { amount: dec!(1.5) })
        );
        assert!(matches!(
            positive_vnd(Decimal::MAX),
            Err(Rejection::AmountTooLarge { .. })
        ));
    }

    #[test]
    fn rounding_is_half_up() {
        assert_eq!(round_dong(dec!(0.5)), dec!(1));
        assert_eq!(round_dong(dec!(1.4999)), dec!(1));
        assert_eq!(round_dong(dec!(2.5)), dec!(3));
    }
}
