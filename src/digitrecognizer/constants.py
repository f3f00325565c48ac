"""Constants of the input format that training, export and serving share (stdlib only)."""

# The MNIST training set's pixel mean and standard deviation, after scaling to [0, 1]. Training normalises with
# them, the exported graph does the same inside itself, and the model card records them.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081

INPUT_PX = 28  # the model's input is INPUT_PX x INPUT_PX, white ink on black
DIGITS = 10  # outputs 0-9; an eleventh output, when a network has one, is "not a digit"
NOT_A_DIGIT = DIGITS  # the label (and output index) of "not a digit"
