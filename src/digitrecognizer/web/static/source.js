// Which source of answers the page uses: the REST API of `digitrecognizer serve`. The static site
// (`digitrecognizer build-site`) writes its own source.js, naming the model running in the browser instead.
export { serverAnswers as answers } from "./answers.js";
