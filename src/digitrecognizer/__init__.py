"""DigitRecognizer: handwritten digit recognition."""
