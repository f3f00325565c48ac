"""DigitRecognizer: handwritten digit recognition as a library, a command line tool, a REST API and a web app."""

__version__ = "0.1.0"
__all__ = ["Recognizer", "Prediction", "NumberReading"]


def __getattr__(name: str):
    # Imported on first use so that `digitrecognizer --help` and the training code start fast.
    if name in __all__:
        from . import recognizer

        return getattr(recognizer, name)
    raise AttributeError(f"module 'digitrecognizer' has no attribute {name!r}")
