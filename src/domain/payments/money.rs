//! Whole-VND money helpers. VND has no minor unit: every amount that moves
//! money is a whole number of đồng, and every rounding names its strategy.

use rust_decimal::prelude::*;
use rust_decimal_macros::dec;

use crate::domain::payments::Rejection;

/// Sanity ceiling for any single amount, and for a budget allocation:
/// 10^15 VND. A monthly allowance is ~10^6; the ceiling only catches keying
/// errors while keeping every sum of a run far below Decimal's ~7.9e28.
pub const MAX_AMOUNT: Decimal = dec!(1_000_000_000_000_000);

/// Validate a whole-đồng amount that moves money (> 0), normalised to scale 0
/// so that equal amounts compare and serialise identically.
pub fn positive_vnd(amount: Decimal) -> Result<Decimal, Rejection> {
    if amount.is_sign_negative() || amount.is_zero() {
        return Err(Rejection::AmountNotPositive { amount });
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
    Ok(amount.normalize())
}

/// Round to whole đồng, half-up. For the positive amounts we pay,
/// `MidpointAwayFromZero` is half-up (x.5 → x+1).
pub fn round_dong_half_up(x: Decimal) -> Decimal {
    crate::domain::money::round_dong(x)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_validated() {
        assert_eq!(positive_vnd(dec!(100.00)), Ok(dec!(100)));
        assert_eq!(positive_vnd(dec!(100.00)).unwrap().to_string(), "100");
        assert_eq!(
            positive_vnd(dec!(0)),
            Err(Rejection::AmountNotPositive { amount: dec!(0) })
        );
        assert_eq!(
            positive_vnd(dec!(-1)),
            Err(Rejection::AmountNotPositive { amount: dec!(-1) })
        );
        assert_eq!(
            positive_vnd(dec!(1.5)),
            Err(Rejection::FractionalDong { amount: dec!(1.5) })
        );
        assert!(matches!(
            positive_vnd(MAX_AMOUNT + dec!(1)),
            Err(Rejection::AmountTooLarge { .. })
        ));
    }

    #[test]
    fn rounding_is_half_up() {
        assert_eq!(round_dong_half_up(dec!(833332.5)), dec!(833333));
        assert_eq!(round_dong_half_up(dec!(833332.49)), dec!(833332));
        assert_eq!(round_dong_half_up(dec!(540000.0)).to_string(), "540000");
    }
}
