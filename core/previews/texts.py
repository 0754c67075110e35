"""Every customer-facing string of the Looking Glass previews."""

PICK_STYLE = "What a lovely photo! Which style would you like to see on {pet}? Tap one:"
WORKING = "Working on {pet}'s {style} preview ✨ It takes about a minute."
WORKING_FULL = "Working on {pet}'s {style} preview from three angles ✨ It takes a minute or two."
READY = "Here is {pet} in a {style}!"
DISCLAIMER = (
    "This is an AI sketch from your photo, not a promise: {groomer} decides what is possible once she "
    "sees the coat's condition (length, matting, how it grows)."
)
NO_PHOTO = (
    "Send me a photo of your dog first (face and body visible, good light) and I'll show you the styles."
)
UNKNOWN_STYLE = "I don't know that style. These are the ones I can show:"
DAILY_LIMIT = (
    "That's all the previews I can make for you today ({limit} a day). Come back tomorrow for more, or "
    "book and talk it through with {groomer}!"
)
PAUSED = (
    "Style previews are taking a short break this month, sorry! {groomer} is happy to talk styles with "
    "you: book, or ask her here."
)
BAD_PHOTO = "I couldn't read that photo. Could you send it again as a normal JPEG or PNG picture?"
PHOTO_FAILED = "I couldn't save that photo just now. Please try again in a few minutes."
DELAYED = "Your preview is taking longer than usual; I'm still on it and will send it as soon as it's ready."
FAILED = "Sorry, I couldn't make that preview. {groomer} has been told; you can try another style meanwhile."
UNSAFE = "The preview didn't come out right, sorry. Try another photo or style?"
BOOK_STYLE = "Book this style"
ANOTHER_STYLE = "Try another style"
ALL_ANGLES = "All 3 angles"
BOOKING_WITH_STYLE = "Lovely choice: {style} for {pet}. Which day suits you?"
BOOKING_NOTE = "Style: {style} (Looking Glass preview #{design_id})"
BUDGET_80 = (
    "Looking Glass previews have used {spent} of this month's {budget} budget (80 %). At 100 % they "
    "pause until next month (PREVIEW_MONTHLY_BUDGET_USD)."
)
BUDGET_100 = (
    "Looking Glass previews reached this month's {budget} budget and are paused until next month "
    "(raise PREVIEW_MONTHLY_BUDGET_USD to resume)."
)
FAL_CONFIG = "FAL refused our request ({detail}). Check FAL_KEY and FAL_MODEL; previews fail meanwhile."
