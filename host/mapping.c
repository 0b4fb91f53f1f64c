/* mapping: not written yet */
